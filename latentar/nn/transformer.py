"""Transformer layers over sequences (B, N, D): multi-head self-attention through
``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient kernels on
GPUs) or, for an attention pattern, FlexAttention's block-sparse kernel (``kernel = "flex"``:
compiled once per shape; torch runs it on CUDA, and on the CPU without gradients only, so
elsewhere the same mask goes through ``scaled_dot_product_attention``), a GELU MLP, and the
pre-LayerNorm block that joins them with residual dropout
(Radford et al. 2019's GPT-2 layout, as in Image GPT and the VQGAN prior).

A block reads neighbouring positions only through its attention, and makes that call
through a pass object ``run`` (``latentar.nn.passes``): ``run.self_attend`` is the
whole causal sequence in a ``FullPass`` and one position over a KV cache in a
``StepPass``; ``EncoderPass`` attends over the whole sequence both ways (an encoder of
a map known in full, such as a spatial context).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.nn.attention.flex_attention import flex_attention

from latentar.nn.attention_patterns import AttentionPattern, pattern_block_mask, pattern_mask

KERNELS = ("sdpa", "flex")  # how a patterned causal pass attends: a masked dense kernel, or a block-sparse one


@functools.cache
def compiled_flex_attention() -> Callable[..., torch.Tensor]:
    """``flex_attention`` through ``torch.compile`` (its eager form materializes every score)."""
    return torch.compile(flex_attention, dynamic=False)


def flex_runs_here(q: torch.Tensor) -> bool:
    """Whether torch has a FlexAttention kernel for queries ``q``: on CUDA, or on the CPU with no
    gradient to carry (torch has no CPU backward for it)."""
    return q.device.type == "cuda" or (q.device.type == "cpu" and not (torch.is_grad_enabled() and q.requires_grad))


class SelfAttention(nn.Module):
    """Multi-head self-attention: x (B, N, D) -> (B, N, D), D = heads · key_dim."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if width % heads:
            raise ValueError(f"the width {width} must be a multiple of the number of heads {heads}")
        self.heads = heads
        self.key_dim = self.value_dim = width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)  # residual dropout of the output
        self.pattern: AttentionPattern | None = None  # set by a prior: the earlier slots a query sees; None: all
        self.kernel = "sdpa"  # set by a prior: "flex" runs a pattern's whole causal pass block-sparse where it can

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, N, D) -> queries, keys, values, each (B, heads, N, key_dim)."""
        return rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads).unbind(0)

    def combine(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Queries (B, h, Nq, d) over keys and values (B, h, Nk, d) -> (B, Nq, D); ``causal``
        (Nq = Nk): query i sees keys j <= i only; ``mask`` bool (Nq, Nk): True where it may attend."""
        return self.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal))

    def merge(self, heads: torch.Tensor) -> torch.Tensor:
        """The heads' outputs (B, h, N, d) -> (B, N, D): joined, projected, residual dropout."""
        return self.dropout(self.out(rearrange(heads, "b h n d -> b n (h d)")))

    def forward(self, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
        """x (B, N, D) -> (B, N, D); a causal call attends through ``pattern`` when one is set."""
        q, k, v = self.project(x)
        if not causal or self.pattern is None:
            return self.combine(q, k, v, causal=causal)
        if self.kernel == "flex" and flex_runs_here(q):
            blocks = pattern_block_mask(self.pattern, x.shape[1], x.device)
            return self.merge(compiled_flex_attention()(q, k, v, block_mask=blocks))
        return self.combine(q, k, v, causal=False, mask=pattern_mask(self.pattern, x.shape[1], x.device))


def gelu2(x: torch.Tensor) -> torch.Tensor:
    """Image GPT's approximation of GELU: x·σ(1.702·x)."""
    return x * torch.sigmoid(1.702 * x)


# the MLP's nonlinearity, by name
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"gelu": F.gelu, "gelu2": gelu2}
NORMS = {"layernorm": nn.LayerNorm, "rms": nn.RMSNorm}  # x -> (x - mean)/std·g + b, or x·rsqrt(mean(x²) + ε)·g
NORM_EPS = 1e-5  # ε of both norms (GPT-2's and Image GPT's)


def make_norm(kind: str, width: int) -> nn.Module:
    """The norm named ``kind`` (a key of ``NORMS``) over the last dimension, of size ``width``."""
    return NORMS[kind](width, eps=NORM_EPS)


class MLP(nn.Module):
    """x (B, N, D) -> (B, N, D): Linear(D, ratio·D), the activation, Linear(ratio·D, D), dropout."""

    def __init__(self, width: int, ratio: int, dropout: float = 0.0, activation: str = "gelu"):
        super().__init__()
        self.expand = nn.Linear(width, ratio * width)
        self.activation = ACTIVATIONS[activation]
        self.out = nn.Linear(ratio * width, width)
        self.dropout = nn.Dropout(dropout)  # residual dropout of the output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.out(self.activation(self.expand(x))))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attention(norm(x)), then + MLP(norm(x)); the norm is a LayerNorm or
    an RMS norm (``norm``), the MLP's activation GELU or its sigmoid approximation (``activation``).

    x (B, N, D), bias (B, D) or None (added to the residual stream first, e.g. a class
    bias) -> (B, N, D). ``run`` evaluates the attention (see the module docstring).
    """

    def __init__(self, width: int, heads: int, mlp_ratio: int, dropout: float = 0.0, *,
                 norm: str = "layernorm", activation: str = "gelu"):
        super().__init__()
        self.attention_norm = make_norm(norm, width)
        self.attention = SelfAttention(width, heads, dropout)
        self.mlp_norm = make_norm(norm, width)
        self.mlp = MLP(width, mlp_ratio, dropout, activation)

    def forward(self, run, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if bias is not None:
            x = x + bias[:, None]
        x = x + run.self_attend(self.attention, self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class EncoderPass:
    """The pass of a block over a sequence known in full: every position attends to every one."""

    @staticmethod
    def self_attend(attention: SelfAttention, x: torch.Tensor) -> torch.Tensor:
        return attention(x, causal=False)


def init_weights(module: nn.Module, residual_layers: int) -> None:
    """GPT-2's initialisation of the layers under ``module``: linear and embedding weights
    N(0, 0.02²), biases zero, norms identity; the projections that write into the
    residual stream scaled by 1/√(2·residual_layers), so its variance does not grow with depth."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Embedding)):
            nn.init.normal_(layer.weight, std=0.02)
        if isinstance(layer, nn.Linear) and layer.bias is not None:
            nn.init.zeros_(layer.bias)
        if isinstance(layer, (nn.LayerNorm, nn.RMSNorm)):
            nn.init.ones_(layer.weight)
        if isinstance(layer, nn.LayerNorm):
            nn.init.zeros_(layer.bias)
    for layer in module.modules():
        if isinstance(layer, (SelfAttention, MLP)):
            nn.init.normal_(layer.out.weight, std=0.02 / (2 * residual_layers) ** 0.5)

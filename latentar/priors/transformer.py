"""A decoder-only Transformer over the raster sequence of the H·W positions (the Image
Transformer / Image GPT family; the GPT priors of VQGAN and LlamaGen over VQ codes).

Each position (h, w) is one element of a sequence of N = H·W: its C symbols enter as one
vector (a linear map of their C·E input floats), so the head couples the channels of a
pixel. The sequence is shifted by one, so that the slot of position i holds the symbols
of position i - 1 and, through inclusive causal attention (slot i attends to slots
j <= i), position i sees exactly the positions before it. Slot 0 holds a learned start
token, or the class embedding for class-conditional priors.

Positions are learned row + column embeddings: the grid is fixed, so absolute
positions cost nothing at sampling time (a cached key never changes), and the sum keeps
the 2-D layout (the position above is one row embedding away, not W slots) at H + W
vectors instead of H·W.

Blocks are pre-LayerNorm (causal multi-head self-attention through
``scaled_dot_product_attention``, then a GELU MLP), with residual dropout; a
class-conditional prior also adds a learned per-class bias to the residual stream at
each block. A spatial context (the VQ-VAE-2 bottom prior's top codes) is embedded, run
through a small non-causal Transformer encoder (every context position sees the whole
map), upsampled (nearest) to the grid and added at every position: it is known in full,
so it may be used non-causally.

Image GPT's variant (Chen et al. 2020; the ``igpt_*`` presets) swaps three parts: an RMS norm
(``norm = "rms"``: no mean subtracted, no bias), the sigmoid GELU (``activation = "gelu2"``) and
an output head without bias that starts at zero (``zero_head``: every symbol equally likely at
initialisation). Its head is untied, as Image GPT's: the input side is a projection of the C
symbols' input floats, not a table of K token rows that a head could share.

Fast sampling (``TransformerStepper``) runs each block at the new position only, its
attention over a KV cache of the earlier ones (``StepPass.self_attend``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from latentar.checks import DEPTH, DEPTH_OR_NONE, FRACTION, Checked, FieldError
from latentar.nn.caches import StepCache
from latentar.nn.conditioning import class_biases
from latentar.nn.passes import FullPass, StepPass
from latentar.nn.transformer import ACTIVATIONS, NORMS, EncoderPass, TransformerBlock, init_weights, make_norm
from latentar.priors.base import Prior, register_prior
from latentar.priors.condition import Condition
from latentar.priors.engine import Stepper
from latentar.priors.spec import PriorSpec


@dataclass
class TransformerArch(Checked):
    label = "transformer"
    bounds = {"dropout": FRACTION, "context_layers": DEPTH_OR_NONE, "num_layers": DEPTH,
              "norm": tuple(NORMS), "activation": tuple(ACTIVATIONS)}

    width: int = 256  # D: the residual stream's width
    num_layers: int = 8  # Transformer blocks
    heads: int = 8  # attention heads; width must be a multiple of it
    mlp_ratio: int = 4  # the MLP's hidden width, in multiples of D
    dropout: float = 0.0  # residual and embedding dropout (train mode only)
    context_layers: int = 1  # non-causal blocks of the context encoder (spatial context only);
    #                          0: each position sees only the context codes above it
    # Image GPT's variant (the igpt_* presets set all three)
    norm: str = "layernorm"  # "layernorm", or "rms": x·rsqrt(mean(x²) + ε)·g, no mean subtracted, no bias
    activation: str = "gelu"  # the MLP's: "gelu", or "gelu2": x·σ(1.702·x)
    zero_head: bool = False  # the output head without bias, zero at initialisation (uniform symbols)

    def __post_init__(self):
        super().__post_init__()
        if self.width % self.heads:
            raise FieldError(f"transformer.width ({self.width}) must be a multiple of "
                             f"transformer.heads ({self.heads})")


def block(arch: TransformerArch) -> TransformerBlock:
    """One Transformer block of ``arch``."""
    return TransformerBlock(arch.width, arch.heads, arch.mlp_ratio, arch.dropout, norm=arch.norm,
                            activation=arch.activation)


def grid_positions(rows: nn.Embedding, cols: nn.Embedding) -> torch.Tensor:
    """Learned row (H, D) + column (W, D) embeddings -> (H·W, D) in raster order."""
    return rearrange(rows.weight[:, None] + cols.weight[None], "h w d -> (h w) d")


class ContextEncoder(nn.Module):
    """Context codes long (B, h, w) -> (B, H·W, D) for a grid of (H, W): embedded, with
    their own row + column positions, through non-causal blocks, upsampled (nearest)."""

    def __init__(self, symbols: int, shape: tuple[int, int], arch: TransformerArch):
        super().__init__()
        self.embed = nn.Embedding(symbols, arch.width)
        self.rows, self.cols = nn.Embedding(shape[0], arch.width), nn.Embedding(shape[1], arch.width)
        self.blocks = nn.ModuleList(block(arch) for _ in range(arch.context_layers))
        self.norm = make_norm(arch.norm, arch.width)

    def forward(self, context: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h, w = context.shape[1:]
        c = self.embed(context.flatten(1)) + grid_positions(self.rows, self.cols)  # (B, h·w, D)
        for block in self.blocks:
            c = block(EncoderPass, c)
        c = rearrange(self.norm(c), "b (h w) d -> b d h w", h=h, w=w)
        return rearrange(F.interpolate(c, size=size, mode="nearest"), "b d h w -> b (h w) d")  # (B, H·W, D)


class TransformerStepper(Stepper):
    """``params(h, w, None)`` runs ``Transformer.body`` on slot i = h·W + w alone: its input
    is the start token (i = 0) or the symbols of position i - 1, final by then, plus its
    position terms; each block's key and value of slot i enter the ``StepCache``, and its
    query attends to slots <= i there."""

    prior: Transformer

    def __init__(self, prior: Transformer, x: torch.Tensor, cond: Condition, order: torch.Tensor | None):
        super().__init__(prior, x, cond, order)
        self.cache = StepCache(x.shape[0], [(x.shape[-2], x.shape[-1])])
        self.start = prior.start_token(cond.labels, x.shape[0], cond.augment)  # (n, 1, D)
        self.terms = prior.position_terms(cond.context)  # (1 or n, H·W, D), computed once
        self.biases = prior.class_bias(cond.labels)

    def params(self, h: int, w: int, c: int | None) -> torch.Tensor:
        W = self.x.shape[-1]
        i = h * W + w
        if i == 0:
            slot = self.start
        else:
            ph, pw = divmod(i - 1, W)
            slot = self.prior.embed_symbols(self.prior.input(self.x[:, :, ph:ph + 1, pw:pw + 1]))  # (n, 1, D)
        slot = slot + self.terms[:, i:i + 1]
        return self.prior.body(StepPass(self.cache, h, w), slot, self.biases)[:, 0]  # (n, P)


@register_prior("transformer")
class Transformer(Prior):
    Arch = TransformerArch
    presets = {
        "tiny": dict(width=8, num_layers=2, heads=2, mlp_ratio=2),
        # 7×7 / 8×8 code grids on a CPU: a few minutes of training
        "small": dict(width=96, num_layers=4, heads=4),
        "default": {},
        # VQGAN's class-conditional ImageNet prior (Esser et al. 2021): 48 blocks of width 1536,
        # 24 heads; 1.46B parameters here with 1000 classes over 16×16 codes of K = 16384
        "paper": dict(width=1536, num_layers=48, heads=24),
        # Image GPT (Chen et al. 2020) iGPT-S, -M, -L; over 32×32 palette tokens of K = 512 (C = 1):
        # 76.0M, 454M, 1.36B parameters here (the paper: 76M, 455M, 1.4B)
        **{name: dict(width=width, num_layers=layers, heads=heads, norm="rms", activation="gelu2", zero_head=True)
           for name, width, layers, heads in (("igpt_s", 512, 24, 8), ("igpt_m", 1024, 36, 8),
                                              ("igpt_l", 1536, 48, 16))},
    }
    supports_context = True
    full_context = True  # causal attention reaches every earlier position
    checkpointable = True
    Stepper = TransformerStepper

    def __init__(self, spec: PriorSpec, arch: TransformerArch):
        super().__init__(spec, arch)
        C, H, W = spec.shape
        D = arch.width
        self.symbol_projection = nn.Linear(C * self.input.dim, D)  # the C symbols of a position -> one vector
        self.rows, self.cols = nn.Embedding(H, D), nn.Embedding(W, D)
        # slot 0: a learned start token, or the class embedding (every parameter is used, as DDP needs)
        self.start = nn.Parameter(torch.zeros(1, 1, D)) if spec.label_rows is None else None
        self.class_embedding = None if spec.label_rows is None else nn.Embedding(spec.label_rows, D)
        self.augment_embedding = class_biases(None, [D], spec.augment_sizes)  # + one row per augmentation value
        self.context = None
        if spec.context_shape is not None:
            assert spec.context_symbols is not None  # given together (``PriorSpec``)
            self.context = ContextEncoder(spec.context_symbols, spec.context_shape, arch)
        self.dropout = nn.Dropout(arch.dropout)
        self.blocks = nn.ModuleList(block(arch) for _ in range(arch.num_layers))
        self.norm = make_norm(arch.norm, D)
        self.out = nn.Linear(D, self.head.num_params, bias=not arch.zero_head)
        transformer_parts = [self.symbol_projection, self.rows, self.cols, self.class_embedding, self.context,
                             self.blocks, self.norm, self.out]
        for part in filter(None, transformer_parts):
            init_weights(part, arch.num_layers + arch.context_layers)
        if self.start is not None:
            nn.init.normal_(self.start, std=0.02)
        if arch.zero_head:
            nn.init.zeros_(self.out.weight)
        # a (D) residual bias per block, zero at first (see ``ClassBiases``)
        self.class_bias = class_biases(spec.label_rows, [D] * arch.num_layers)

    # ---- the pieces a stepper shares -----------------------------------------------------
    def embed_symbols(self, z: torch.Tensor) -> torch.Tensor:
        """Input floats z (B, C·E, H, W) -> one vector per position (B, H·W, D)."""
        return self.symbol_projection(rearrange(z, "b ce h w -> b (h w) ce"))

    def start_token(self, labels: torch.Tensor | None, batch: int, augment: torch.Tensor | None) -> torch.Tensor:
        """What slot 0 holds -> (B, 1, D): the class embedding, or the learned start token; plus the
        sum of the augmentation types' embeddings of ``augment`` (long (B,)) under augmentations."""
        if self.class_embedding is None:
            assert self.start is not None  # an unconditional prior has a start token
            start = self.start.expand(batch, -1, -1)
        else:
            start = self.class_embedding(labels)[:, None]
        (augmentation,) = self.augment_embedding(None, augment)  # (B, D) or None
        return start if augmentation is None else start + augmentation[:, None]

    def position_terms(self, context: torch.Tensor | None) -> torch.Tensor:
        """What every slot adds to its input -> (1 or B, H·W, D): its row + column embedding,
        plus the encoded context at its position."""
        _, H, W = self.spec.shape
        terms = grid_positions(self.rows, self.cols)[None]  # (1, H·W, D)
        return terms if self.context is None else terms + self.context(context, (H, W))

    # ---- the network ---------------------------------------------------------------------
    def network(self, z, cond):
        B, _, H, W = z.shape
        start = self.start_token(cond.labels, B, cond.augment)  # (B, 1, D)
        shifted = torch.cat([start, self.embed_symbols(z)[:, :-1]], dim=1)  # (B, N, D)
        params = self.body(FullPass(), shifted + self.position_terms(cond.context),
                           self.class_bias(cond.labels))  # (B, N, P)
        return rearrange(params, "b (h w) p -> b p h w", h=H, w=W)

    def body(self, run, slots: torch.Tensor, biases: list[torch.Tensor | None]) -> torch.Tensor:
        """Slot inputs (B, N, D) -> head params (B, N, P); N = 1 in a position pass."""
        x = self.dropout(slots)
        for block, bias in zip(self.blocks, biases):
            x = self.checkpointed(block, run, x, bias)
        return self.out(self.norm(x))

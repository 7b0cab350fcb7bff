"""PixelSNAIL (Chen et al. 2018, "PixelSNAIL: An Improved Autoregressive Generative Model").

A strictly causal input layer (a down-shifted 1×3 plus a down-right-shifted 2×1
convolution, both shifted one step so that position (h, w) sees only earlier pixels),
then blocks of PixelCNN++ gated residual units over 2×2 down-right-shifted
convolutions, each block closed by multi-head causal self-attention: queries from the
features and positional background channels, keys and values from the features, the
input symbols and the background, position i attending to positions j < i only. The
attention output enters a 1×1 gated residual unit. Whole pixels are conditioned on:
the head couples the channels of a pixel.

Conditioning: a learned per-class bias in every gated unit, and a spatial context map
(the VQ-VAE-2 bottom prior conditioned on top codes): the context codes are embedded,
run through non-causal residual convolutions, upsampled (nearest) to the grid and fed
to every gated unit. The context is known in full, so it may be used non-causally.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from latentar.checks import COUNT, FRACTION, Checked
from latentar.nn.attention import CausalSelfAttention
from latentar.nn.conditioning import class_bias_table
from latentar.nn.incremental import StepCache, StepPass, incremental_sampler
from latentar.nn.shifted import GatedResBlock, Nin, down_right_shifted_conv, down_shifted_conv, plain_conv
from latentar.priors.base import Prior, PriorSpec, eval_mode, register_prior

BACKGROUND = 2  # positional channels: row and column coordinates in [-1, 1]


@dataclass
class PixelSNAILArch(Checked):
    label = "pixelsnail"
    bounds = {"res_units": COUNT, "dropout": FRACTION, "context_blocks": COUNT}

    hidden: int = 64  # F: feature channels (paper: 256)
    num_blocks: int = 4  # blocks of gated residual units, each closed by attention (paper: 12)
    res_units: int = 2  # gated residual units per block (paper: 4)
    heads: int = 2  # attention heads
    key_dim: int = 16  # key/query width per head (paper: 16)
    value_dim: int = 64  # value width per head (paper: 128)
    dropout: float = 0.0  # inside the gated units (train mode only)
    context_hidden: int = 64  # width of the context network (spatial context only)
    context_blocks: int = 2  # non-causal residual blocks of the context network


def background(H: int, W: int, like: torch.Tensor) -> torch.Tensor:
    """Positional channels -> (1, 2, H, W): the row and the column coordinate in [-1, 1]."""
    rows = torch.linspace(-1, 1, H, device=like.device, dtype=like.dtype)
    cols = torch.linspace(-1, 1, W, device=like.device, dtype=like.dtype)
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"))[None]


def causal_conv(in_channels: int, out_channels: int) -> nn.Module:
    return down_right_shifted_conv(in_channels, out_channels, (2, 2))


def pointwise_conv(in_channels: int, out_channels: int) -> nn.Module:
    return Nin(in_channels, out_channels)


class ContextNet(nn.Module):
    """Context codes long (B, h, w) -> features (B, F_c, H, W), non-causal."""

    def __init__(self, symbols: int, channels: int, blocks: int):
        super().__init__()
        self.embed = nn.Embedding(symbols, channels)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ELU(), nn.Conv2d(channels, channels, 3, padding=1),
                          nn.ELU(), nn.Conv2d(channels, channels, 3, padding=1))
            for _ in range(blocks))

    def forward(self, context: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        c = rearrange(self.embed(context), "b h w f -> b f h w")  # (B, F_c, h, w)
        for block in self.blocks:
            c = c + block(c)
        return F.interpolate(c, size=size, mode="nearest")  # (B, F_c, H, W)


def at(t: torch.Tensor | None, row: int, col: int) -> torch.Tensor | None:
    """One position of a map: (B, c, H, W) -> (B, c, 1, 1); None stays None."""
    return None if t is None else t[:, :, row:row + 1, col:col + 1]


def join(*maps: torch.Tensor | None) -> torch.Tensor:
    """Concatenate the given maps along channels, skipping Nones."""
    return torch.cat([m for m in maps if m is not None], dim=1)


class SnailBlock(nn.Module):
    """Gated residual units, causal attention, and a 1×1 gated unit taking its output.

    h (B, F, H, W), zb (B, C·E + 2, H, W) the input symbols and the background channels,
    ctx (B, F_c, H, W) or None -> (B, F, H, W).
    """

    def __init__(self, hidden: int, in_channels: int, arch: PixelSNAILArch, context_channels: int):
        super().__init__()
        self.units = nn.ModuleList(GatedResBlock(hidden, causal_conv, context_channels, arch.dropout)
                                   for _ in range(arch.res_units))
        # queries: features + background; keys/values: features + symbols + background
        self.attention = CausalSelfAttention(hidden + BACKGROUND, hidden + in_channels + BACKGROUND,
                                             arch.heads, arch.key_dim, arch.value_dim)
        self.post = GatedResBlock(hidden, pointwise_conv, self.attention.out_channels + context_channels,
                                  arch.dropout)

    def residual(self, h, ctx, biases, apply=plain_conv):
        for unit, bias in zip(self.units, biases):
            h = unit(h, ctx, bias, apply)
        return h

    def combine(self, h, attended, ctx, bias, apply=plain_conv):
        return self.post(h, join(attended, ctx), bias, apply)

    def forward(self, h, zb, ctx, biases):
        h = self.residual(h, ctx, biases)
        attended = self.attention(join(h, zb[:, -BACKGROUND:]), join(h, zb))  # (B, n·dv, H, W)
        return self.combine(h, attended, ctx, biases[-1])


@register_prior("pixelsnail")
class PixelSNAIL(Prior):
    Arch = PixelSNAILArch
    presets = {
        "tiny": dict(hidden=8, num_blocks=1, res_units=1, heads=2, key_dim=4, value_dim=4,
                     context_hidden=4, context_blocks=1),
        # 7×7 / 8×8 code grids on a CPU: ~190k parameters, a few minutes of training
        "small": dict(hidden=48, num_blocks=2, res_units=1, heads=2, key_dim=16, value_dim=32,
                      context_hidden=32),
        "default": {},
        # the paper's CIFAR-10 model: 12 blocks of 4 residual units with 256 filters,
        # attention keys of 16 and values of 128
        "paper": dict(hidden=256, num_blocks=12, res_units=4, heads=1, key_dim=16, value_dim=128,
                      dropout=0.5, context_hidden=128),
    }
    heads = ("categorical", "logistic_mixture")
    supports_context = True
    full_context = True  # causal attention reaches every earlier position

    def __init__(self, spec: PriorSpec, arch: PixelSNAILArch):
        super().__init__(spec, arch)
        width, in_channels = arch.hidden, spec.shape[0] * self.input.dim
        self.context = None
        context_channels = 0
        if spec.context_shape is not None:
            self.context = ContextNet(spec.context_symbols, arch.context_hidden, arch.context_blocks)
            context_channels = arch.context_hidden
        # strictly causal input: the row above (3 columns) + the pixel to the left
        self.first_above = down_shifted_conv(in_channels + BACKGROUND, width, (1, 3), shift=True)
        self.first_left = down_right_shifted_conv(in_channels + BACKGROUND, width, (2, 1),
                                                  shift_right=True)
        self.blocks = nn.ModuleList(SnailBlock(width, in_channels, arch, context_channels)
                                    for _ in range(arch.num_blocks))
        self.units_per_block = arch.res_units + 1
        # a (2F) gate bias per gated unit
        self.class_bias = class_bias_table(spec.num_classes, arch.num_blocks * self.units_per_block * 2 * width)
        self.out = Nin(width, self.head.num_params)

    def _biases(self, labels: torch.Tensor | None) -> list[list]:
        """Per block, per gated unit: a class bias (B, 2F), or None."""
        count = self.units_per_block
        if self.class_bias is None:
            return [[None] * count for _ in self.blocks]
        chunks = self.class_bias(labels).chunk(len(self.blocks) * count, dim=1)
        return [list(chunks[b * count:(b + 1) * count]) for b in range(len(self.blocks))]

    def _context(self, context: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor | None:
        return None if self.context is None else self.context(context, size)

    def network(self, z, labels, context):
        B, _, H, W = z.shape
        zb = join(z, background(H, W, z).expand(B, -1, -1, -1))  # (B, C·E + 2, H, W)
        ctx = self._context(context, (H, W))  # (B, F_c, H, W) or None
        h = self.first_above(zb) + self.first_left(zb)  # (B, F, H, W)
        for block, biases in zip(self.blocks, self._biases(labels)):
            h = block(h, zb, ctx, biases)
        return self.out(F.elu(h))  # (B, P, H, W)

    @incremental_sampler
    def sample(self, n, cond=None, *, temperature=1.0, top_k=None, generator=None):
        """Exact incremental sampling; same draws, in the same order, as ``naive_sample``.

        Each step computes every layer at the new position only: convolutions from
        cached input maps, attention from cached keys and values of earlier positions.
        Keys and values of a position include its symbol, so they are stored right
        after it is drawn.
        """
        C, H, W = self.spec.shape
        x, (labels, context) = self.blank_grids(n, cond)
        draw = dict(temperature=temperature, top_k=top_k, generator=generator)
        with eval_mode(self):
            z = self.input(x)  # (n, C·E, H, W)
            # (n, C·E + 2, H, W): symbols (filled in as drawn) and background channels
            zb = join(z, background(H, W, z).expand(n, -1, -1, -1))
            ctx = self._context(context, (H, W))  # (n, F_c, H, W) or None
            biases = self._biases(labels)
            cache = StepCache(n, [(H, W)])
            kv = [block.attention.new_cache(n, H * W, z) for block in self.blocks]
            for i in range(H * W):
                row, col = divmod(i, W)
                params, block_inputs = self._step(zb, ctx, biases, cache, kv, row, col)  # (n, P)
                x[:, :, row, col] = self.head.sample(params, channel=None, **draw)
                zb[:, :z.shape[1], row, col] = self.input(x[:, :, row:row + 1, col:col + 1])[:, :, 0, 0]
                for block, h_in, cache_b in zip(self.blocks, block_inputs, kv):
                    block.attention.remember(cache_b, i, join(h_in, at(zb, row, col)))
        return x

    def _step(self, zb, ctx, biases, cache, kv, row, col):
        """Every layer at (row, col) from the caches -> (params (n, P), block inputs [(n, F, 1, 1)])."""
        ops = StepPass(cache, row, col)
        apply = partial(ops.conv, level=0)
        ctx_at, bg_at = at(ctx, row, col), at(zb, row, col)[:, -BACKGROUND:]
        h = ops.conv_input(self.first_above, zb) + ops.conv_input(self.first_left, zb)  # (n, F, 1, 1)
        block_inputs = []
        for block, block_biases, cache_b in zip(self.blocks, biases, kv):
            h = block.residual(h, ctx_at, block_biases, apply)
            block_inputs.append(h)
            attended = block.attention.attend_at(cache_b, row * zb.shape[-1] + col, join(h, bg_at))
            h = block.combine(h, attended, ctx_at, block_biases[-1])  # its convs are 1×1: pointwise
        return self.out(F.elu(h))[:, :, 0, 0], block_inputs

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

The network is written once (``at_position``) for whole maps and for the one position of a
generation step (``latentar.nn.passes``); fast sampling (``PassStepper``) evaluates every
layer at the new position only: convolutions from cached input maps, attention from the
cached keys and values of earlier positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from latentar.checks import DEPTH, DEPTH_OR_NONE, FRACTION, Checked
from latentar.nn.attention import CausalSelfAttention
from latentar.nn.conditioning import ContextNet, class_biases
from latentar.nn.shifted import GatedResBlock, Nin, down_right_shifted_conv, down_shifted_conv
from latentar.priors.base import register_prior
from latentar.priors.condition import Condition
from latentar.priors.layer_cache import PassPrior, PassStepper
from latentar.priors.spec import PriorSpec

BACKGROUND = 2  # positional channels: row and column coordinates in [-1, 1]


@dataclass
class PixelSNAILArch(Checked):
    label = "pixelsnail"
    bounds = {"res_units": DEPTH_OR_NONE, "dropout": FRACTION, "context_blocks": DEPTH_OR_NONE, "num_blocks": DEPTH}

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

    def forward(self, run, h, zb, ctx, biases):
        """``run`` (``latentar.nn.passes``) evaluates the convs and the attention;
        ctx is already at what the pass computes (``run.view``)."""
        for unit, bias in zip(self.units, biases):
            h = unit(run, h, ctx, bias)
        # the keys and values of a position see its own symbols (zb), its query does not
        attended = run.attend(self.attention, join(h, run.view(zb[:, -BACKGROUND:])), h, zb)  # (B, n·dv, ...)
        return self.post(run, h, join(attended, ctx), biases[-1])


class Given(NamedTuple):
    """What every pass of PixelSNAIL reads of its condition."""

    context: torch.Tensor | None  # the context network's features (B, F_c, H, W), or None
    biases: list[list]  # per block, per gated unit: a class bias (B, 2F), or None


@register_prior("pixelsnail")
class PixelSNAIL(PassPrior):
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
    supports_context = True
    full_context = True  # causal attention reaches every earlier position
    Stepper = PassStepper
    checkpointable = True  # every block (gated units + attention) goes through ``checkpointed``

    def __init__(self, spec: PriorSpec, arch: PixelSNAILArch):
        super().__init__(spec, arch)
        width, in_channels = arch.hidden, spec.shape[0] * self.input.dim
        self.context = None
        context_channels = 0
        if spec.context_shape is not None:
            assert spec.context_symbols is not None  # given together (``PriorSpec``)
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
        self.class_bias = class_biases(spec.label_rows, [2 * width] * (arch.num_blocks * self.units_per_block),
                                       spec.augment_sizes)
        self.out = Nin(width, self.head.num_params)

    def given(self, cond: Condition, size: tuple[int, int]) -> Given:
        """The context network's features of the spatial context at a grid of ``size`` (H, W),
        and per block, per gated unit, the class bias."""
        context = None if self.context is None else self.context(cond.context, size)
        biases, count = self.class_bias(cond.labels, cond.augment), self.units_per_block
        return Given(context, [biases[b * count:(b + 1) * count] for b in range(len(self.blocks))])

    def network_input(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, C·E, H, W) -> (B, C·E + 2, H, W) with the positional channels appended."""
        B, _, H, W = z.shape
        return join(z, background(H, W, z).expand(B, -1, -1, -1))

    def at_position(self, run, zb: torch.Tensor, given: Given) -> torch.Tensor:
        """zb (B, C·E + 2, H, W) the symbols and the positional channels -> params (B, P, H, W),
        or (B, P, 1, 1) in a position pass."""
        ctx = None if given.context is None else run.view(given.context)
        h = run.conv_input(self.first_above, zb) + run.conv_input(self.first_left, zb)  # (B, F, ...)
        for block, block_biases in zip(self.blocks, given.biases):
            h = self.checkpointed(block, run, h, zb, ctx, block_biases)
        return self.out(F.elu(h))  # (B, P, ...)

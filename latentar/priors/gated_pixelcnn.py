"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders").

A vertical stack (every row above) and a horizontal stack (the current row up to the
current pixel) of gated ``tanh · σ`` layers (``latentar.nn.gated``), with the
vertical-to-horizontal 1×1 link, residual connections in the horizontal stack and
skip connections summed into two 1×1 output layers. The horizontal stack masks R→G→B
channel groups (mask A in the first layer, B after), so symbol (c, h, w) sees every
earlier pixel — no blind spot — and channels < c of its own pixel. Class conditioning
adds a learned per-class bias to every gate of both stacks (V·h in the paper); a spatial
context (codes known in full, ``supports_context``) goes through a non-causal ``ContextNet``
to features s at the grid's size, and a 1×1 convolution of them enters every gate of both
stacks the same way (the paper's V·s, ``latentar.nn.conditioning.context_biases``).

Fast sampling (``PassStepper``) is exact and incremental (Ramachandran et al. 2017):
the vertical stack runs once per row (it only depends on rows above: ``rows_above``), and
the horizontal stack runs at the current position only (``at_position``), reading its
inputs from per-layer caches; the context bias maps are computed once per generation and
read at the stepped row or position (``run.view``). So the network is written as two stacks, each once for both
passes (``latentar.nn.passes``), the vertical one handing its links to the horizontal
one through ``run.share``: a row pass cannot compute a position's horizontal features
(they depend on the symbols left of it on the same row), and rerunning the vertical
stack at every position would cost a whole row of work per symbol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, cast

import torch
from torch import nn

from latentar.checks import DEPTH, DEPTH_OR_NONE, Checked
from latentar.nn.conditioning import class_biases, context_biases
from latentar.nn.gated import GatedStackLayer
from latentar.nn.masked import masked_output, round_to_groups
from latentar.priors.base import register_prior
from latentar.priors.condition import Condition
from latentar.priors.layer_cache import PassPrior, PassStepper
from latentar.priors.spec import PriorSpec


@dataclass
class GatedPixelCNNArch(Checked):
    label = "gated_pixelcnn"
    bounds = {"num_layers": DEPTH, "context_blocks": DEPTH_OR_NONE}

    hidden: int = 64  # p: gated features per stack (rounded up to a multiple of C)
    num_layers: int = 8  # gated layers; the first reads the image with mask A
    first_kernel: int = 7  # k of the first layer: (k//2+1)×k vertical, 1×k horizontal
    kernel: int = 3  # k of the other layers
    output_hidden: int = 256  # width of the 1×1 layer between the skip sum and the head
    context_hidden: int = 64  # width of the context network (spatial context only)
    context_blocks: int = 2  # non-causal residual blocks of the context network


@register_prior("gated_pixelcnn")
class GatedPixelCNN(PassPrior):
    Arch = GatedPixelCNNArch
    presets = {
        "tiny": dict(hidden=12, num_layers=2, first_kernel=3, output_hidden=24, context_hidden=4, context_blocks=1),
        "small": dict(hidden=32, num_layers=6, first_kernel=5, output_hidden=96, context_hidden=32),
        "default": {},
        # the conditional ImageNet 32×32 model: 20 layers of 384 units with 5×5 filters
        "paper": dict(hidden=384, num_layers=20, first_kernel=7, kernel=5, output_hidden=1024, context_hidden=128),
    }
    channel_masked = True
    supports_context = True
    full_context = True  # vertical + horizontal stacks: no blind spot
    Stepper = PassStepper
    layers: Sequence[GatedStackLayer]  # an nn.ModuleList

    def __init__(self, spec: PriorSpec, arch: GatedPixelCNNArch):
        super().__init__(spec, arch)
        C = spec.shape[0]
        hidden = round_to_groups(arch.hidden, C)
        out_hidden = round_to_groups(arch.output_hidden, C)
        in_channels = C * self.input.dim
        self.layers = cast(Sequence[GatedStackLayer], nn.ModuleList(
            GatedStackLayer(in_channels if i == 0 else hidden, hidden,
                            arch.first_kernel if i == 0 else arch.kernel, C, first=i == 0)
            for i in range(arch.num_layers)))
        # per layer: 2p for the vertical gate, 2p for the horizontal
        sizes = [2 * hidden] * (2 * arch.num_layers)
        self.class_bias = class_biases(spec.label_rows, sizes, spec.augment_sizes)
        self.context_bias = context_biases(spec.context_symbols, arch.context_hidden, arch.context_blocks, sizes)
        self.out = masked_output(hidden, out_hidden, self.head.num_params, C)

    def given(self, cond: Condition, size: tuple[int, int]) -> list[tuple]:
        """Per layer ((vertical class bias (B, 2p), context map (B, 2p, H, W)), (the horizontal
        ones)), each None where the prior has no such condition."""
        slots = list(zip(self.class_bias(cond.labels, cond.augment), self.context_bias(cond.context, size)))
        return list(zip(slots[0::2], slots[1::2]))

    def rows_above(self, run, z: torch.Tensor, biases: list[tuple]) -> None:
        """The vertical stack over the image z (B, C·E, H, W) (one row in a row pass); each
        layer's link (B, 2p, H, W) to the horizontal stack goes through ``run.share``."""
        v = z
        for layer, (vertical, _) in zip(self.layers, biases):
            v, link = layer.vertical(run, v, *vertical)  # (B, p, ·, W), (B, 2p, ·, W)
            run.share(layer, link)

    def at_position(self, run, z: torch.Tensor, biases: list[tuple]) -> torch.Tensor:
        """The horizontal stack -> params (B, P, H, W) (or (B, P, 1, 1) in a position pass)."""
        h, skips = z, 0
        for layer, (_, horizontal) in zip(self.layers, biases):
            h, skip = layer.horizontal(run, h, run.shared(layer), *horizontal)
            skips = skips + skip
        return run.pointwise(self.out, skips)  # (B, P, ·, ·)

"""PixelCNN (van den Oord et al. 2016, "Pixel Recurrent Neural Networks", section 3.5).

A 7×7 mask-A convolution, then residual blocks of mask-B convolutions
(ReLU → 1×1 2h→h, ReLU → k×k h→h, ReLU → 1×1 h→2h, plus the input), then two
ReLU → 1×1 mask-B layers to the head's params. Every layer groups channels R→G→B, so
symbol (h, w, c) sees every earlier pixel and channels < c of its own pixel. Stacked
3×3 mask-B convolutions leave a blind spot up and to the right; ``gated_pixelcnn``
removes it. Class conditioning adds a learned per-class bias to every block's input; a
spatial context (codes known in full, ``supports_context``) goes through a non-causal
``ContextNet`` to features at the grid's size and adds a 1×1 convolution of them to every
block's input in the same place (``latentar.nn.conditioning.context_biases``). The context
is not part of x, so every channel group may see all of it.

Fast sampling (``PassStepper``) is incremental: every layer's output at (h, w)
depends only on earlier positions (and channels < c of its own), so each step evaluates
``at_position`` at the current position only, from cached input maps
(``latentar.nn.passes``), once per channel; the context bias maps are computed once per
generation and read at the stepped position (``run.view``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from latentar.checks import DEPTH, DEPTH_OR_NONE, Checked
from latentar.nn.conditioning import class_biases, conditioned, context_biases
from latentar.nn.masked import MaskedConv2d, masked_output, round_to_groups
from latentar.priors.base import register_prior
from latentar.priors.condition import Condition
from latentar.priors.layer_cache import PassPrior, PassStepper
from latentar.priors.spec import PriorSpec


@dataclass
class PixelCNNArch(Checked):
    label = "pixelcnn"
    bounds = {"num_blocks": DEPTH, "context_blocks": DEPTH_OR_NONE}

    hidden: int = 64  # h: blocks map 2h → h → h → 2h features (paper: 128)
    num_blocks: int = 7  # residual blocks of mask-B convolutions (paper: 15 layers)
    first_kernel: int = 7  # kernel of the mask-A input layer
    kernel: int = 3  # kernel of the mask-B convolution inside each block
    output_hidden: int = 256  # width of the two 1×1 output layers (paper: 1024)
    context_hidden: int = 64  # width of the context network (spatial context only)
    context_blocks: int = 2  # non-causal residual blocks of the context network


class ResidualBlock(nn.Module):
    """(B, 2h, H, W) -> (B, 2h, H, W) through 1×1 → k×k → 1×1 mask-B convolutions."""

    def __init__(self, features: int, mid: int, kernel: int, groups: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.ReLU(), MaskedConv2d(features, mid, 1, "B", groups),
            nn.ReLU(), MaskedConv2d(mid, mid, kernel, "B", groups),
            nn.ReLU(), MaskedConv2d(mid, features, 1, "B", groups),
        )

    def forward(self, run, x: torch.Tensor) -> torch.Tensor:
        """``run`` (``latentar.nn.passes``) evaluates the layers."""
        relu_in, reduce, relu_mid, conv, relu_out, expand = self.layers
        h = run.conv(conv, run.pointwise((relu_in, reduce, relu_mid), x))  # (B, h, ...)
        return x + run.pointwise((relu_out, expand), h)


@register_prior("pixelcnn")
class PixelCNN(PassPrior):
    Arch = PixelCNNArch
    presets = {
        "tiny": dict(hidden=6, num_blocks=2, output_hidden=12, context_hidden=4, context_blocks=1),
        "small": dict(hidden=32, num_blocks=5, output_hidden=96, context_hidden=32),
        "default": {},
        "paper": dict(hidden=128, num_blocks=15, output_hidden=1024, context_hidden=128),
    }
    channel_masked = True
    supports_context = True
    Stepper = PassStepper

    def __init__(self, spec: PriorSpec, arch: PixelCNNArch):
        super().__init__(spec, arch)
        C = spec.shape[0]
        features = round_to_groups(2 * arch.hidden, C)
        mid = round_to_groups(arch.hidden, C)
        out_hidden = round_to_groups(arch.output_hidden, C)
        self.first = MaskedConv2d(C * self.input.dim, features, arch.first_kernel, "A", C)
        self.blocks = nn.ModuleList(ResidualBlock(features, mid, arch.kernel, C)
                                    for _ in range(arch.num_blocks))
        sizes = [features] * (arch.num_blocks + 1)  # each block's input, then the output layers'
        self.class_bias = class_biases(spec.label_rows, sizes, spec.augment_sizes)
        self.context_bias = context_biases(spec.context_symbols, arch.context_hidden, arch.context_blocks, sizes)
        self.out = masked_output(features, out_hidden, self.head.num_params, C)

    def given(self, cond: Condition, size: tuple[int, int]) -> list[tuple]:
        """Per block's input, then the output layers: (class bias (B, 2h), context bias map
        (B, 2h, H, W)), each None where the prior has no such condition."""
        return list(zip(self.class_bias(cond.labels, cond.augment), self.context_bias(cond.context, size)))

    def at_position(self, run, z: torch.Tensor, biases: list[tuple]) -> torch.Tensor:
        """z (B, C·E, H, W) -> params (B, P, H, W), or at one position (B, P, 1, 1) in a StepPass."""
        h = run.conv_input(self.first, z)  # (B, 2h, H, W)
        for block, (bias, context) in zip(self.blocks, biases):
            h = block(run, conditioned(run, h, bias, context))
        bias, context = biases[-1]
        return run.pointwise(self.out, conditioned(run, h, bias, context))

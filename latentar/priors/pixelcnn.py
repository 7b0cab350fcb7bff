"""PixelCNN (van den Oord et al. 2016, "Pixel Recurrent Neural Networks", section 3.5).

A 7×7 mask-A convolution, then residual blocks of mask-B convolutions
(ReLU → 1×1 2h→h, ReLU → k×k h→h, ReLU → 1×1 h→2h, plus the input), then two
ReLU → 1×1 mask-B layers to the head's params. Every layer groups channels R→G→B, so
symbol (h, w, c) sees every earlier pixel and channels < c of its own pixel. Stacked
3×3 mask-B convolutions leave a blind spot up and to the right; ``gated_pixelcnn``
removes it. Class conditioning adds a learned per-class bias to every block's input.

``sample`` is incremental: every layer's output at (h, w) depends only on earlier
positions (and channels < c of its own), so each step evaluates every layer at the
current position only, from cached input maps (``latentar.nn.incremental``), once per
channel. It draws exactly what ``naive_sample`` draws for the same generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from latentar.checks import Checked
from latentar.nn.conditioning import class_bias_table
from latentar.nn.incremental import FullPass, StepCache, StepPass, incremental_sampler
from latentar.nn.masked import MaskedConv2d, masked_output, round_to_groups
from latentar.nn.shifted import plain_conv
from latentar.priors.base import Prior, PriorSpec, eval_mode, register_prior


@dataclass
class PixelCNNArch(Checked):
    label = "pixelcnn"

    hidden: int = 64  # h: blocks map 2h → h → h → 2h features (paper: 128)
    num_blocks: int = 7  # residual blocks of mask-B convolutions (paper: 15 layers)
    first_kernel: int = 7  # kernel of the mask-A input layer
    kernel: int = 3  # kernel of the mask-B convolution inside each block
    output_hidden: int = 256  # width of the two 1×1 output layers (paper: 1024)


class ResidualBlock(nn.Module):
    """(B, 2h, H, W) -> (B, 2h, H, W) through 1×1 → k×k → 1×1 mask-B convolutions."""

    def __init__(self, features: int, mid: int, kernel: int, groups: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.ReLU(), MaskedConv2d(features, mid, 1, "B", groups),
            nn.ReLU(), MaskedConv2d(mid, mid, kernel, "B", groups),
            nn.ReLU(), MaskedConv2d(mid, features, 1, "B", groups),
        )

    def forward(self, x: torch.Tensor, apply=plain_conv) -> torch.Tensor:
        """``apply(conv, t)`` evaluates the k×k conv (on the whole map by default)."""
        relu_in, reduce, relu_mid, conv, relu_out, expand = self.layers
        h = apply(conv, relu_mid(reduce(relu_in(x))))  # (B, h, ...)
        return x + expand(relu_out(h))


@register_prior("pixelcnn")
class PixelCNN(Prior):
    Arch = PixelCNNArch
    presets = {
        "tiny": dict(hidden=6, num_blocks=2, output_hidden=12),
        "small": dict(hidden=32, num_blocks=5, output_hidden=96),
        "default": {},
        "paper": dict(hidden=128, num_blocks=15, output_hidden=1024),
    }
    heads = ("categorical", "logistic_mixture")
    channel_masked = True

    def __init__(self, spec: PriorSpec, arch: PixelCNNArch):
        super().__init__(spec, arch)
        C = spec.shape[0]
        if spec.head == "logistic_mixture" and C > 1:
            raise ValueError("pixelcnn masks R→G→B groups itself; with C > 1 use head 'categorical'")
        features = round_to_groups(2 * arch.hidden, C)
        mid = round_to_groups(arch.hidden, C)
        out_hidden = round_to_groups(arch.output_hidden, C)
        self.first = MaskedConv2d(C * self.input.dim, features, arch.first_kernel, "A", C)
        self.blocks = nn.ModuleList(ResidualBlock(features, mid, arch.kernel, C)
                                    for _ in range(arch.num_blocks))
        self.class_bias = class_bias_table(spec.num_classes, features * (arch.num_blocks + 1))
        self.out = masked_output(features, out_hidden, self.head.num_params, C)

    def network(self, z, labels, context):
        return self.body(FullPass([tuple(z.shape[2:])]), z, labels)

    def body(self, run, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """z (B, C·E, H, W) -> params (B, P, H, W), or at one position (B, P, 1, 1) in a StepPass."""
        h = run.conv_input(self.first, z)  # (B, 2h, H, W)
        biases = None
        if self.class_bias is not None:
            biases = self.class_bias(labels).chunk(len(self.blocks) + 1, dim=1)  # each (B, 2h)
        for i, block in enumerate(self.blocks):
            if biases is not None:
                h = h + biases[i][:, :, None, None]
            h = block(h, partial(run.conv, level=0))
        if biases is not None:
            h = h + biases[-1][:, :, None, None]
        return self.out(h)  # (B, P, H, W)

    def incremental_params(self, x: torch.Tensor, labels: torch.Tensor | None):
        """Yield (h, w, c, params (B, P)) in raster then channel order, computed incrementally.

        x long (B, C, H, W) is read as it is at each step (a sampler fills x[:, c, h, w]
        after receiving it); the params equal ``self(x)[..., h, w]`` for channel c's draw.
        """
        C, H, W = self.spec.shape
        cache = StepCache(x.shape[0], [(H, W)])
        for h in range(H):
            for w in range(W):
                for c in range(C):  # channel c's block of params sees channels < c of (h, w)
                    yield h, w, c, self.body(StepPass(cache, h, w), self.input(x), labels)[:, :, 0, 0]

    @incremental_sampler
    def sample(self, n, cond=None, *, temperature=1.0, top_k=None, generator=None):
        """Incremental generation; draws exactly what ``naive_sample`` draws."""
        x, (labels, _) = self.blank_grids(n, cond)
        with eval_mode(self):
            for h, w, c, params in self.incremental_params(x, labels):
                x[:, c, h, w] = self.head.sample(params, channel=c, temperature=temperature, top_k=top_k,
                                                 generator=generator)
        return x

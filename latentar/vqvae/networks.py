"""Encoder and decoder of the VQ-VAE: strided convolutions and residual blocks.

Each downsampling step is a 4×4 convolution with stride 2 (H → H/2); each upsampling
step its transpose (H → 2H). A stack of n steps maps an H×W image to an
(H/2^n)×(W/2^n) grid, so H and W must be divisible by 2^n.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """x + conv1×1(relu(conv3×3(relu(x)))), shape-preserving (B, C, H, W)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualStack(nn.Sequential):
    """``blocks`` residual blocks followed by a ReLU, (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, hidden: int, blocks: int):
        super().__init__(*[ResidualBlock(channels, hidden) for _ in range(blocks)], nn.ReLU())


class Encoder(nn.Sequential):
    """x (B, in_channels, H, W) -> features (B, out_channels, H/2^n, W/2^n).

    n strided 4×4 convolutions (the first to hidden/2 channels when n > 1), a 3×3
    convolution, the residual stack and a 1×1 projection to ``out_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, hidden: int, res_hidden: int,
                 res_blocks: int, downsample: int):
        if downsample < 1:
            raise ValueError(f"downsample must be >= 1 (the grid is H/2^n), got {downsample}")
        widths = [in_channels] + [hidden // 2] * (downsample - 1) + [hidden]
        layers: list[nn.Module] = []
        for i in range(downsample):
            layers += [nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1), nn.ReLU()]
        layers[-1:] = []  # no ReLU right before the 3×3 conv: the residual stack starts with one
        layers += [nn.Conv2d(hidden, hidden, 3, padding=1), ResidualStack(hidden, res_hidden, res_blocks),
                   nn.Conv2d(hidden, out_channels, 1)]
        super().__init__(*layers)


class Decoder(nn.Sequential):
    """z (B, in_channels, h, w) -> (B, out_channels, h·2^n, w·2^n), unbounded floats.

    A 3×3 convolution, the residual stack and n transposed 4×4 convolutions of stride 2.
    """

    def __init__(self, in_channels: int, out_channels: int, *, hidden: int, res_hidden: int,
                 res_blocks: int, upsample: int):
        if upsample < 1:
            raise ValueError(f"upsample must be >= 1, got {upsample}")
        widths = [hidden] + [hidden // 2] * (upsample - 1) + [out_channels]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden, 3, padding=1),
                                   ResidualStack(hidden, res_hidden, res_blocks)]
        for i in range(upsample):
            layers += [nn.ConvTranspose2d(widths[i], widths[i + 1], 4, stride=2, padding=1), nn.ReLU()]
        layers[-1:] = []  # the output is linear
        super().__init__(*layers)

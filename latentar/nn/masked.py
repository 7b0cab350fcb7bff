"""Masked convolutions (PixelRNN/PixelCNN masks A and B) with R→G→B channel groups.

Channels are split into ``groups`` contiguous blocks, block g serving image channel g
(groups = 1 for single-channel grids). At the centre tap, output group g sees input
groups < g (mask A, first layer only) or <= g (mask B); every tap above the centre row
and left of the centre on its row sees all groups; taps right of or below the centre
see nothing. The mask is a registered buffer multiplied into the weight on every call,
so the optimizer can never write a forbidden weight into use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from latentar.nn.stepping import WINDOWS, ConvParts, window_parts


def round_to_groups(channels: int, groups: int) -> int:
    """The smallest multiple of ``groups`` that is >= ``channels``."""
    return -(-channels // groups) * groups


def group_of(channels: int, groups: int) -> torch.Tensor:
    """Group index of each of ``channels`` contiguous channels -> long (channels,)."""
    if channels % groups:
        raise ValueError(f"{channels} channels cannot be split into {groups} equal groups")
    return torch.arange(channels) // (channels // groups)


def causal_mask(out_channels: int, in_channels: int, kernel: tuple[int, int],
                mask_type: str, groups: int) -> torch.Tensor:
    """Float mask (out, in, kh, kw) for a centred masked convolution of type 'A' or 'B'."""
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    kh, kw = kernel
    ch, cw = kh // 2, kw // 2
    mask = torch.zeros(out_channels, in_channels, kh, kw)
    mask[:, :, :ch, :] = 1  # rows above
    mask[:, :, ch, :cw] = 1  # left of centre on the centre row
    g_out = group_of(out_channels, groups)[:, None]
    g_in = group_of(in_channels, groups)[None, :]
    centre = g_in < g_out if mask_type == "A" else g_in <= g_out
    mask[:, :, ch, cw] = centre.float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """A 'same'-padded conv whose taps obey mask A or B with channel groups.

    x (B, in, H, W) -> (B, out, H, W).
    """

    mask: torch.Tensor  # (out, in, kh, kw), a buffer

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 mask_type: str = "B", groups: int = 1, bias: bool = True):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        kernel = (kh, kw)
        if kernel[0] % 2 == 0 or kernel[1] % 2 == 0:
            raise ValueError(f"masked convolutions need odd kernel sizes, got {kernel}")
        super().__init__(in_channels, out_channels, kernel, padding=(kernel[0] // 2, kernel[1] // 2),
                         bias=bias)
        self.mask_type = mask_type
        self.channel_groups = groups
        self.register_buffer("mask", causal_mask(out_channels, in_channels, kernel, mask_type, groups),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding)


@WINDOWS.register(MaskedConv2d)
def masked_conv_parts(conv: MaskedConv2d) -> ConvParts:
    """Steps apply the masked weight; the taps the mask leaves live tell ``RowSplit`` which
    inputs a position reads."""
    return window_parts(conv, conv.weight * conv.mask, taps=conv.mask.amax(dim=(0, 1)) > 0)


def masked_output(features: int, hidden: int, num_params: int, groups: int) -> nn.Sequential:
    """The output layers of the channel-masked priors: (B, features, H, W) -> (B, num_params, H, W)
    through ReLU → 1×1 mask-B conv → ReLU → 1×1 mask-B conv, keeping the channel groups."""
    return nn.Sequential(
        nn.ReLU(), MaskedConv2d(features, hidden, 1, "B", groups),
        nn.ReLU(), MaskedConv2d(hidden, num_params, 1, "B", groups),
    )

"""Shifted convolutions and gated residual blocks (Salimans et al. 2017, "PixelCNN++").

Causality comes from asymmetric padding, never from masks:

- down-shifted conv (kh×kw): output (h, w) sees input rows h-kh+1..h, columns w±(kw-1)/2;
- down-right-shifted conv (kh×kw): rows h-kh+1..h, columns w-kw+1..w;
- ``shift`` moves the output one more row down (or column right), so it sees only
  strictly earlier rows (columns): pad one more row on top, crop one at the bottom.

Strided versions downsample (output (i, j) stays attached to input (2i, 2j)); the
transposed versions upsample and crop so that output (h, w) reads input (⌊h/2⌋, ⌊w/2⌋)
and its left/upper neighbours only. Every layer keeps its geometry in ``pad`` /
``crop`` so that incremental evaluation (``latentar.nn.passes``) can evaluate it at one row
or position (``PaddedConv2d`` registers its window in ``latentar.nn.stepping``).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from latentar.nn.conditioning import conditioned
from latentar.nn.stepping import WINDOWS, ConvParts, window_parts


class PaddedConv2d(nn.Conv2d):
    """A conv with explicit ``pad = (left, right, top, bottom)``; negative entries crop.

    x (B, in, H, W) -> (B, out, H', W').
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int],
                 pad: tuple[int, int, int, int], stride: int = 1):
        super().__init__(in_channels, out_channels, kernel, stride=stride)
        self.pad = tuple(pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, self.pad), self.weight, self.bias, self.stride)


@WINDOWS.register(PaddedConv2d)
def padded_conv_parts(conv: PaddedConv2d) -> ConvParts:
    return window_parts(conv, pad=conv.pad)


def down_shifted_conv(in_channels: int, out_channels: int, kernel: tuple[int, int] = (2, 3),
                      stride: int = 1, shift: bool = False) -> PaddedConv2d:
    """Output row h sees input rows <= h (< h with ``shift``), centred columns."""
    kh, kw = kernel
    if kw % 2 == 0:
        raise ValueError(f"a down-shifted conv needs an odd kernel width, got {kernel}")
    side = (kw - 1) // 2
    return PaddedConv2d(in_channels, out_channels, kernel, (side, side, kh - 1 + shift, -int(shift)), stride)


def down_right_shifted_conv(in_channels: int, out_channels: int, kernel: tuple[int, int] = (2, 2),
                            stride: int = 1, shift_right: bool = False) -> PaddedConv2d:
    """Output (h, w) sees rows <= h and columns <= w (< w with ``shift_right``)."""
    kh, kw = kernel
    return PaddedConv2d(in_channels, out_channels, kernel,
                        (kw - 1 + shift_right, -int(shift_right), kh - 1, 0), stride)


class CroppedConvTranspose2d(nn.ConvTranspose2d):
    """A transposed conv whose output is cropped to ``size`` from offset ``crop = (top, left)``.

    x (B, in, h, w) -> (B, out, *size).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int], stride: int,
                 crop: tuple[int, int]):
        super().__init__(in_channels, out_channels, kernel, stride=stride)
        self.crop = tuple(crop)

    # a required crop size, not torch's optional output_size: a deliberately different signature
    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:  # type: ignore[override]
        out = F.conv_transpose2d(x, self.weight, self.bias, self.stride)
        top, left = self.crop
        return out[:, :, top:top + size[0], left:left + size[1]]


def down_shifted_deconv(in_channels: int, out_channels: int, kernel: tuple[int, int] = (2, 3),
                        stride: int = 2) -> CroppedConvTranspose2d:
    """Upsampling that keeps 'rows above only': output row h reads input row ⌊h/stride⌋."""
    return CroppedConvTranspose2d(in_channels, out_channels, kernel, stride, (0, (kernel[1] - 1) // 2))


def down_right_shifted_deconv(in_channels: int, out_channels: int, kernel: tuple[int, int] = (2, 2),
                              stride: int = 2) -> CroppedConvTranspose2d:
    """Upsampling that keeps 'above or left': output (h, w) reads input (⌊h/s⌋, ⌊w/s⌋)."""
    return CroppedConvTranspose2d(in_channels, out_channels, kernel, stride, (0, 0))


class Nin(nn.Linear):
    """A 1×1 conv ("network in network") as a matmul over channels: (B, in, ...) -> (B, out, ...).

    Unlike ``nn.Conv2d`` it costs one small matmul on a single position, which is what
    incremental generation evaluates.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # movedim, not an einops pattern: this runs at every generation step
        return F.linear(x.movedim(1, -1), self.weight, self.bias).movedim(-1, 1)  # (B, out, H, W)


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """ELU of [x, -x] along channels: (B, F, ...) -> (B, 2F, ...)."""
    return F.elu(torch.cat([x, -x], dim=1))


class GatedResBlock(nn.Module):
    """PixelCNN++'s gated residual block: x + a·σ(b) with [a, b] from two shifted convs.

    x (B, F, H, W), aux (B, A, H, W) or None, bias (B, 2F) or None, context a bias map (B, 2F, H, W)
    of ``level`` or None (``conditioning.conditioned``) -> (B, F, H, W).
    ``conv`` builds the (2F → F) and (2F → 2F) shifted convs; ``run`` (a pass of
    ``latentar.nn.passes``) evaluates them at ``level``: on whole maps, or at the
    one row or position of a generation step. Every other operation is pointwise, so
    the block runs unchanged on any spatial slice.
    """

    def __init__(self, channels: int, conv: Callable[[int, int], nn.Module], aux_channels: int = 0,
                 dropout: float = 0.0):
        super().__init__()
        self.conv_in = conv(2 * channels, channels)
        self.aux = Nin(2 * aux_channels, channels) if aux_channels else None
        self.dropout = nn.Dropout(dropout)
        self.conv_out = conv(2 * channels, 2 * channels)

    def forward(self, run, x: torch.Tensor, aux: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                level: int = 0, context: torch.Tensor | None = None) -> torch.Tensor:
        h = run.conv(self.conv_in, concat_elu(x), level)  # (B, F, ...)
        if self.aux is not None:
            assert aux is not None, "a block built with aux_channels needs aux"
            h = h + self.aux(concat_elu(aux))
        h = conditioned(run, run.conv(self.conv_out, self.dropout(concat_elu(h)), level), bias, context, level)
        a, b = h.chunk(2, dim=1)
        return x + a * torch.sigmoid(b)

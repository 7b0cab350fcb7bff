"""Incremental evaluation of causal conv nets for fast sampling (Ramachandran et al. 2017).

In a causal network the output at position p depends only on inputs before p, so
when symbols are generated in raster order every layer can be evaluated once per
position (or once per row, for layers that only look at rows above) from cached maps
of its input, instead of rerunning the whole network for every symbol.

Building blocks:

- ``incremental_sampler``: the decorator of every prior's incremental ``sample``;
- ``conv_parts(conv)`` -> ``ConvParts`` (weight, its matrix, bias, pad (left, right, top,
  bottom), stride) of a ``PaddedConv2d``, ``MaskedConv2d`` or plain ``nn.Conv2d``, computed
  once per generation by ``StepCache.parts``;
- ``PaddedMap``: a zero-padded cache of one layer's full input map, written one row
  or one position at a time;
- ``conv_window(parts, padded, row, col)``: the conv's output at one output row
  (col None) -> (B, O, 1, W'), or at one position -> (B, O, 1, 1), read from a padded map;
- ``conv_transpose_window(deconv, source, row, col, width)``: the same for a
  ``CroppedConvTranspose2d`` reading its unpadded input map;
- ``FullPass`` / ``StepPass``: how a network body written once applies its convs,
  to whole maps (training, ``log_prob``) or to the one row or position that a
  generation step needs. Level L is a map downsampled L times by stride 2; its
  position (i, j) is attached to full-resolution position (i·2^L, j·2^L) and is
  computed at the step that reaches that position.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from latentar.nn.masked import MaskedConv2d
from latentar.nn.shifted import CroppedConvTranspose2d, PaddedConv2d


class ConvParts(NamedTuple):
    """What evaluating a conv at one row or position needs."""

    weight: torch.Tensor  # (O, I, kh, kw), masked for a MaskedConv2d
    matrix: torch.Tensor  # (O, kh·kw·I): the weight as a matrix over flattened (kh, kw, I) windows
    bias: torch.Tensor | None  # (O,)
    pad: tuple[int, ...]  # (left, right, top, bottom)
    stride: tuple[int, int]


def incremental_sampler(sample: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Decorator for a prior's incremental ``sample``: runs it under ``torch.inference_mode``
    (less overhead than ``no_grad`` on each of the many small ops of a step) and returns an
    ordinary tensor, which later autograd code may use like any other."""

    @functools.wraps(sample)
    def run(*args, **kwargs) -> torch.Tensor:
        with torch.inference_mode():
            x = sample(*args, **kwargs)
        return x.clone()

    return run


def conv_parts(conv: nn.Conv2d) -> ConvParts:
    """The ``ConvParts`` of a ``PaddedConv2d``, ``MaskedConv2d`` or plain ``nn.Conv2d``."""
    weight = conv.weight * conv.mask if isinstance(conv, MaskedConv2d) else conv.weight
    if isinstance(conv, PaddedConv2d):
        pad = conv.pad
    else:
        ph, pw = conv.padding
        pad = (pw, pw, ph, ph)
    matrix = weight.permute(0, 2, 3, 1).flatten(1)  # (O, kh·kw·I): windows flatten channels last
    return ConvParts(weight, matrix, conv.bias, pad, tuple(conv.stride))


class PaddedMap:
    """Zero-padded cache (B, C, H + t + b, W + l + r) of a layer's input map (B, C, H, W).

    Stored channels last, so that a window's channels at each tap are contiguous and a
    position's window gathers in a few block copies.
    """

    def __init__(self, batch: int, channels: int, size: tuple[int, int], pad: tuple[int, ...],
                 like: torch.Tensor):
        left, right, top, bottom = pad
        self.left, self.top = left, top
        H, W = size
        stored = like.new_zeros(batch, H + top + bottom, W + left + right, channels)
        self.data = stored.permute(0, 3, 1, 2)  # (B, C, H+, W+), channels-last strides

    def write(self, values: torch.Tensor, row: int, col: int | None = None) -> None:
        """Store input row ``row`` (values (B, C, 1, W)) or position (row, col) ((B, C, 1, 1))."""
        r = row + self.top
        if not 0 <= r < self.data.shape[2]:
            return  # a cropped row: no output reads it
        start = self.left + (0 if col is None else col)
        stop = min(start + values.shape[3], self.data.shape[3])
        if stop > start:
            self.data[:, :, r, start:stop] = values[:, :, 0, :stop - start]


def conv_window(parts: ConvParts, padded: torch.Tensor, row: int, col: int | None = None) -> torch.Tensor:
    """A conv's output at output row ``row`` -> (B, O, 1, W'), or at (row, col) -> (B, O, 1, 1).

    ``parts`` are the conv's ``ConvParts``; ``padded`` is its whole input map with its
    padding applied (B, I, H+, W+).
    """
    weight, matrix, bias, _, (sh, sw) = parts
    kh, kw = weight.shape[2:]
    strip = padded[:, :, row * sh:row * sh + kh]  # (B, I, kh, W+)
    if col is None:
        return F.conv2d(strip, weight, bias, stride=(1, sw))
    window = strip[:, :, :, col * sw:col * sw + kw].permute(0, 2, 3, 1)  # (B, kh, kw, I)
    return F.linear(window.flatten(1), matrix, bias)[:, :, None, None]  # (B, O, 1, 1)


def conv_transpose_window(deconv: CroppedConvTranspose2d, source: torch.Tensor, row: int,
                          col: int | None = None, width: int | None = None) -> torch.Tensor:
    """A cropped transposed conv's output at row ``row`` ((B, O, 1, width)) or at (row, col).

    ``source`` is its whole input map (B, I, h, w); only input rows/columns that the
    output row/position receives from are read.
    """
    kh, kw = deconv.weight.shape[2:]
    (sh, sw), (top, left) = deconv.stride, deconv.crop
    out = 0
    for ki in range(kh):
        i, rest = divmod(row + top - ki, sh)
        if rest or not 0 <= i < source.shape[2]:
            continue
        if col is None:  # every column of the row: a 1-row transposed conv, then the crop
            full = F.conv_transpose2d(source[:, :, i:i + 1], deconv.weight[:, :, ki:ki + 1], stride=(1, sw))
            out = out + full[:, :, :, left:left + width]
            continue
        for kj in range(kw):
            j, rest = divmod(col + left - kj, sw)
            if not rest and 0 <= j < source.shape[3]:
                out = out + (source[:, :, i, j] @ deconv.weight[:, :, ki, kj])[:, :, None, None]
    return out + deconv.bias[:, None, None]


class FullPass:
    """Apply every conv to whole maps: the teacher-forced pass (training, ``log_prob``)."""

    def __init__(self, sizes: list[tuple[int, int]]):
        self.sizes = sizes  # (H, W) of each level
        self.shared: dict[Any, torch.Tensor] = {}

    def due(self, level: int) -> bool:
        return True

    def conv(self, conv: nn.Module, x: torch.Tensor, level: int) -> torch.Tensor:
        return conv(x)

    def conv_input(self, conv: nn.Module, z: torch.Tensor) -> torch.Tensor:
        return conv(z)

    def down(self, conv: nn.Module, x: torch.Tensor, level: int) -> torch.Tensor:
        return conv(x)

    def up(self, deconv: CroppedConvTranspose2d, x: torch.Tensor, level: int) -> torch.Tensor:
        return deconv(x, self.sizes[level])

    def share(self, key: Any, x: torch.Tensor, level: int) -> None:
        self.shared[key] = x

    def take(self, key: Any, level: int) -> torch.Tensor:
        return self.shared[key]


class StepCache:
    """What a generation persists between steps: conv parts, padded input maps and shared maps."""

    def __init__(self, batch: int, sizes: list[tuple[int, int]]):
        self.batch, self.sizes = batch, sizes
        self.maps: dict[Any, Any] = {}
        self.convs: dict[nn.Module, ConvParts] = {}

    def parts(self, conv: nn.Module) -> ConvParts:
        """The conv's ``ConvParts``, computed once per generation (the weights do not change)."""
        if conv not in self.convs:
            self.convs[conv] = conv_parts(conv)
        return self.convs[conv]

    def padded(self, conv: nn.Module, x: torch.Tensor, level: int) -> PaddedMap:
        if conv not in self.maps:
            self.maps[conv] = PaddedMap(self.batch, x.shape[1], self.sizes[level], self.parts(conv).pad, x)
        return self.maps[conv]

    def plain(self, key: Any, x: torch.Tensor, level: int) -> torch.Tensor:
        if key not in self.maps:
            self.maps[key] = x.new_zeros(self.batch, x.shape[1], *self.sizes[level])
        return self.maps[key]


class StepPass:
    """One generation step: every conv evaluated at one row (``col`` None) or one position.

    A level is due when the step reaches a position attached to it; regions of levels
    that are not due are not computed (``due`` tells the network body to skip them).
    """

    def __init__(self, cache: StepCache, row: int, col: int | None = None):
        self.cache, self.row, self.col = cache, row, col

    def due(self, level: int) -> bool:
        step = 1 << level
        return self.row % step == 0 and (self.col is None or self.col % step == 0)

    def region(self, level: int) -> tuple[int, int | None]:
        return self.row >> level, None if self.col is None else self.col >> level

    def write(self, target: PaddedMap, x: torch.Tensor, level: int) -> None:
        target.write(x, *self.region(level))

    def conv(self, conv: nn.Module, x: torch.Tensor, level: int) -> torch.Tensor:
        target = self.cache.padded(conv, x, level)
        self.write(target, x, level)
        return conv_window(self.cache.parts(conv), target.data, *self.region(level))

    def conv_input(self, conv: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """A conv of the network input z (B, I, H, W), complete up to this step."""
        parts = self.cache.parts(conv)
        return conv_window(parts, F.pad(z, parts.pad), *self.region(0))

    def down(self, conv: nn.Module, x: torch.Tensor, level: int) -> torch.Tensor | None:
        """A strided conv from level-1 to ``level``; None when ``level`` is not due."""
        target = self.cache.padded(conv, x, level - 1)
        self.write(target, x, level - 1)
        if not self.due(level):
            return None
        return conv_window(self.cache.parts(conv), target.data, *self.region(level))

    def up(self, deconv: CroppedConvTranspose2d, x: torch.Tensor | None, level: int) -> torch.Tensor | None:
        """A transposed conv from level+1 (x None when that level is not due) to ``level``."""
        if x is not None:
            source = self.cache.plain(deconv, x, level + 1)
            i, j = self.region(level + 1)
            source[:, :, i:i + 1, slice(None) if j is None else slice(j, j + 1)] = x
        if not self.due(level):
            return None
        return conv_transpose_window(deconv, self.cache.maps[deconv], *self.region(level),
                                     width=self.cache.sizes[level][1])

    def share(self, key: Any, x: torch.Tensor, level: int) -> None:
        """Keep a row-mode result so that later position steps can ``take`` it."""
        i, _ = self.region(level)
        self.cache.plain(key, x, level)[:, :, i:i + 1] = x

    def take(self, key: Any, level: int) -> torch.Tensor:
        i, j = self.region(level)
        return self.cache.maps[key][:, :, i:i + 1, j:j + 1]

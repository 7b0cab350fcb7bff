"""Conv windows: a conv evaluated at one row or one position of its output map.

Building blocks of incremental evaluation (``latentar.nn.passes``), for the passes and for
layers that cache by themselves (the PixelRNN layers):

- ``PaddedMap``: a zero-padded cache of a layer's input map, written row by row or position
  by position as a generation reaches it;
- ``conv_window(parts, padded, row, col)``: a conv's output at one row (col None) ->
  (B, O, 1, W'), or at one position -> (B, O, 1, 1), from its ``ConvParts``
  (``latentar.nn.stepping``) and its padded input;
- ``input_window``: what the conv of a whole input map reads at a row or position;
- ``conv_transpose_window``: the same as ``conv_window`` for a ``CroppedConvTranspose2d``;
- ``RowSplit``: a causal conv at one position as a once-per-row part (the rows above) and a
  part of the position's own row;
- ``as_matrix`` / ``as_position``: a position's map (B, C, 1, 1) as a matrix (B, C) and back.

A step is a chain of small ops on a few positions, so its cost is mostly per-op overhead:
windows are gathered channels last and evaluated as one matrix product (``torch.addmm``)
rather than as conv calls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from latentar.nn.shifted import CroppedConvTranspose2d
from latentar.nn.stepping import ConvParts


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
        self.cells = like.new_zeros(batch, H + top + bottom, W + left + right, channels)  # (B, H+, W+, C)
        self.data = self.cells.permute(0, 3, 1, 2)  # (B, C, H+, W+), channels-last strides

    def write(self, values: torch.Tensor, row: int, col: int | None = None) -> None:
        """Store input row ``row`` (values (B, C, 1, W)) or position (row, col) ((B, C, 1, 1))."""
        r = row + self.top
        if not 0 <= r < self.data.shape[2]:
            return  # a cropped row: no output reads it
        start = self.left + (0 if col is None else col)
        if col is not None and values.shape[3] == 1:  # one position: the common case, kept short
            if start < self.cells.shape[2]:
                self.cells[:, r, start] = values.flatten(1)
            return
        stop = min(start + values.shape[3], self.data.shape[3])
        if stop > start:
            self.data[:, :, r, start:stop] = values[:, :, 0, :stop - start]


def conv_window(parts: ConvParts, padded: torch.Tensor, row: int, col: int | None = None) -> torch.Tensor:
    """A conv's output at output row ``row`` -> (B, O, 1, W'), or at (row, col) -> (B, O, 1, 1).

    ``parts`` are the conv's ``ConvParts``; ``padded`` is its whole input map with its
    padding applied (B, I, H+, W+).
    """
    weight, matrix, bias, (sh, sw) = parts.weight, parts.matrix, parts.bias, parts.stride
    kh, kw = weight.shape[2:]
    strip = padded[:, :, row * sh:row * sh + kh]  # (B, I, kh, W+)
    if col is None:  # one matrix product over the row's windows: on a row, faster than conv2d
        return F.linear(row_windows(strip, kw, sw), matrix, bias).transpose(1, 2)[:, :, None]  # (B, O, 1, W')
    window = strip[:, :, :, col * sw:col * sw + kw].permute(0, 2, 3, 1)  # (B, kh, kw, I)
    return F.linear(window.flatten(1), matrix, bias)[:, :, None, None]  # (B, O, 1, 1)


def row_windows(strip: torch.Tensor, kernel_width: int, stride: int = 1) -> torch.Tensor:
    """The windows of a strip (B, I, r, W+) along its columns, each flattened in (r, kw, I)
    order like ``ConvParts.matrix`` -> (B, W', r·kw·I)."""
    windows = strip.unfold(3, kernel_width, stride)  # (B, I, r, W', kw)
    return windows.permute(0, 3, 2, 4, 1).flatten(2)


class RowSplit:
    """A stride-1 causal conv evaluated at every position of a map, in raster order, split by
    when its inputs become final.

    Position (row, col) reads the input rows above ``row`` (the first ``above`` rows of its
    window), final when the row begins, and its own row up to itself (the next window row,
    its first ``width`` columns); taps after the position have zero weight in a causal conv
    and are left out. So the rows-above taps and the bias are evaluated for a whole row in
    one matrix product when the row begins (on maps this small, several times faster than
    a conv call), and a position adds one matrix product over its own-row window. ``of``
    returns None for a conv that is strided, has weight after the position, or has no taps.

    ``at``: the conv of a feature map handed over one position at a time (each position's
    last input is final); it keeps the current row's inputs and the rows above.
    ``at_input``: the conv of a whole map that the caller keeps complete up to the position.
    """

    def __init__(self, parts: ConvParts, above: int, width: int, size: tuple[int, int]):
        weight, bias, (left, right, _, _) = parts.weight, parts.bias, parts.pad
        out, self.channels = weight.shape[:2]  # O, I
        self.above, self.width, self.left, self.right, self.size = above, width, left, right, size
        self.kernel_width = weight.shape[3]
        # (above·kw·I, O): the rows-above taps as a matrix over flattened (above, kw, I) windows
        self.above_weight = weight[:, :, :above].permute(2, 3, 1, 0).reshape(-1, out) if above else None
        own = weight[:, :, above, :width] if width else None  # (O, I, width)
        self.own = None if own is None else own.permute(2, 1, 0).reshape(-1, out)  # (width·I, O)
        self.bias = bias if bias is not None else weight.new_zeros(out)  # (O,)
        self.row: int | None = None  # the row begun last
        self.terms: tuple[torch.Tensor, ...] = ()  # per output column (B, O): its rows-above taps + bias
        self.strip: torch.Tensor  # (B, I, above, W+): its padded rows above (``at``), from the first row on
        self.inputs: list[torch.Tensor] = []  # (``at``) its inputs (B, I) so far, by padded column

    @classmethod
    def of(cls, conv: nn.Conv2d, parts: ConvParts, size: tuple[int, int]) -> RowSplit | None:
        """The split of ``conv`` over a map of ``size`` (H, W), or None."""
        kh, kw = parts.weight.shape[2:]
        left, _, top, _ = parts.pad
        if parts.stride != (1, 1) or tuple(conv.dilation) != (1, 1) or conv.groups != 1 or top < 0:
            return None
        # the taps with weight: a mask's pattern, or every tap of an unmasked conv
        live = (torch.ones(kh, kw, dtype=torch.bool) if parts.taps is None else parts.taps).tolist()
        if any(live[i][j] for i in range(top, kh) for j in range(kw) if i > top or j > left):
            return None  # weight on rows below the position, or right of it on its own row
        own = live[top] if top < kh else []
        width = max((j + 1 for j, on in enumerate(own) if on), default=0)
        above = min(top, kh)
        return cls(parts, above, width, size) if above or width else None

    def at(self, row: int, col: int, x: torch.Tensor) -> torch.Tensor:
        """The output at (row, col) -> (B, O), from the input there x (B, I) and the inputs
        handed over at earlier positions (the last one handed over at each)."""
        if row != self.row:
            self._begin(row, x)
        self.inputs[self.left + col] = x
        if self.own is None:
            return self._terms(col)
        window = self.inputs[col] if self.width == 1 else torch.cat(self.inputs[col:col + self.width], dim=1)
        return torch.addmm(self._terms(col), window, self.own)

    def at_input(self, row: int, col: int, z: torch.Tensor) -> torch.Tensor:
        """The output at (row, col) -> (B, O) of z (B, I, H, W), complete up to (row, col)."""
        if row != self.row and self.above:
            start = max(row - self.above, 0)
            strip = F.pad(z[:, :, start:row], (self.left, self.right, self.above - (row - start), 0))
            self._row_terms(row, strip)
        if self.own is None:
            return self._terms(col)
        first = col - self.left  # the input column of the window's first tap
        skip = max(-first, 0)  # taps left of the map
        window = z[:, :, row, first + skip:first + self.width].transpose(1, 2).reshape(z.shape[0], -1)
        return torch.addmm(self._terms(col), window, self.own[skip * self.channels:])

    def _begin(self, row: int, x: torch.Tensor) -> None:
        """Row ``row`` begins (rows come in order): the row before joins the rows above."""
        B, W = x.shape[0], self.size[1]
        if self.row is None:  # the first row: everything above is padding
            self.zero = x.new_zeros(B, self.channels)
            self.strip = x.new_zeros(B, self.channels, self.above, self.left + W + self.right)
        elif self.above:
            finished = torch.stack(self.inputs[self.left:self.left + W], dim=-1)  # (B, I, W)
            finished = F.pad(finished, (self.left, self.right))[:, :, None]  # (B, I, 1, W+)
            self.strip = torch.cat([self.strip[:, :, 1:], finished], dim=2)
        self.inputs = [self.zero] * (self.left + W)
        if self.above:
            self._row_terms(row, self.strip)
        self.row = row

    def _row_terms(self, row: int, strip: torch.Tensor) -> None:
        """The terms of row ``row`` from its padded rows above, strip (B, I, above, W+)."""
        assert self.above_weight is not None  # there are rows above
        windows = row_windows(strip, self.kernel_width)  # (B, W', above·kw·I)
        terms = torch.addmm(self.bias, windows.flatten(0, 1), self.above_weight)  # (B·W', O)
        self.row, self.terms = row, terms.view(*windows.shape[:2], -1).unbind(1)

    def _terms(self, col: int) -> torch.Tensor:
        return self.bias if self.above_weight is None else self.terms[col]  # (O,) or (B, O)


def conv_transpose_window(deconv: CroppedConvTranspose2d, source: torch.Tensor, row: int,
                          col: int | None = None, width: int | None = None) -> torch.Tensor:
    """A cropped transposed conv's output at row ``row`` ((B, O, 1, width)) or at (row, col).

    ``source`` is its whole input map (B, I, h, w); only input rows/columns that the
    output row/position receives from are read.
    """
    kh, kw = deconv.weight.shape[2:]
    (sh, sw), (top, left) = deconv.stride, deconv.crop
    out: torch.Tensor | int = 0
    for ki in range(kh):
        i, rest = divmod(row + top - ki, sh)
        if rest or not 0 <= i < source.shape[2]:
            continue
        if col is None:  # every column of the row: a 1-row transposed conv, then the crop
            assert width is not None, "a row needs its width"
            full = F.conv_transpose2d(source[:, :, i:i + 1], deconv.weight[:, :, ki:ki + 1], stride=(1, sw))
            out = out + full[:, :, :, left:left + width]
            continue
        for kj in range(kw):
            j, rest = divmod(col + left - kj, sw)
            if not rest and 0 <= j < source.shape[3]:
                out = out + (source[:, :, i, j] @ deconv.weight[:, :, ki, kj])[:, :, None, None]
    assert deconv.bias is not None  # a CroppedConvTranspose2d always has one
    return out + deconv.bias[:, None, None]


def input_window(parts: ConvParts, z: torch.Tensor, row: int, col: int | None = None) -> torch.Tensor:
    """What a conv's output row ``row`` (col None) or position (row, col) reads of its whole
    input z (B, I, H, W), zero-padded as the conv pads -> (B, I, kh, W+) or (B, I, kh, kw);
    ``conv_window(parts, ·, 0[, 0])`` of it is the conv's output there."""
    left, right, top, _ = parts.pad
    (kh, kw), (sh, sw) = parts.weight.shape[2:], parts.stride
    H, W = z.shape[2:]
    r0 = row * sh - top
    r1, r2 = max(r0, 0), min(r0 + kh, H)  # the rows inside the map
    if col is None:
        return F.pad(z[:, :, r1:r2], (left, right, r1 - r0, r0 + kh - r2))
    c0 = col * sw - left
    c1, c2 = max(c0, 0), min(c0 + kw, W)
    return F.pad(z[:, :, r1:r2, c1:c2], (c1 - c0, c0 + kw - c2, r1 - r0, r0 + kh - r2))


def as_matrix(x: torch.Tensor) -> torch.Tensor:
    """A position's map (B, C, 1, 1) as a matrix (B, C), a view (cheaper than ``flatten``)."""
    return x.view(x.shape[0], -1)


def as_position(v: torch.Tensor) -> torch.Tensor:
    """A matrix (B, C) as a position's map (B, C, 1, 1), a view (cheaper than indexing)."""
    return v.view(v.shape[0], v.shape[1], 1, 1)

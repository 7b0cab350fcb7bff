"""Incremental evaluation of causal networks for fast sampling (Ramachandran et al. 2017).

In a causal network the output at position p depends only on inputs before p, so
when symbols are generated in raster order every layer can be evaluated once per
position (or once per row, for layers that only look at rows above) from cached maps
of its input, instead of rerunning the whole network for every symbol.

One protocol: a network body is written once and makes every layer call that reads
neighbouring positions through a *pass* object, by convention the parameter ``run``:

- ``run.conv(conv, x, level)``: a conv of an inner feature map x;
- ``run.pointwise(layers, x)``: 1×1 layers (convs, ``Nin``s, activations) in sequence,
  which read the position itself only;
- ``run.conv_input(conv, z)``: a conv of the network input z, a whole map that the
  sampler keeps complete up to the current step;
- ``run.down`` / ``run.up``: strided conv / cropped transposed conv between levels;
- ``run.attend(attention, q_in, kv_in, kv_own)``: causal self-attention over raster
  positions, keys and values from ``join(kv_in, kv_own)``;
- ``run.self_attend(attention, x)``: inclusive causal self-attention of a sequence
  x (B, N, D) over raster positions (a ``latentar.nn.transformer.SelfAttention``);
  position i sees positions j <= i, whose inputs are known when i is computed;
- ``run.view(t)``: a map known in full (context, positional channels) at what the
  pass computes; ``run.share`` / ``run.shared``: hand a row pass's result to the
  position passes; ``run.due(level)``: whether the pass computes anything at a level.

``FullPass`` applies every call to whole maps (training, ``log_prob``). ``StepPass``
evaluates it at one row (``col`` None) or one position of a generation, reading and
writing a ``StepCache`` that persists between steps: per conv a zero-padded input map
(``PaddedMap``), per attention module its keys and values (``KVCache``). The keys and
values of a position include its own symbols (``kv_own``), which are drawn after the
position's params are computed: ``StepCache.take(row, col)`` stores them once drawn.
Level L is a map downsampled L times by stride 2; its position (i, j) is attached to
full-resolution position (i·2^L, j·2^L) and is computed at the step that reaches it.

Building blocks for steppers that cache by themselves: ``conv_parts(conv)`` ->
``ConvParts``; ``PaddedMap``; ``conv_window(parts, padded, row, col)``, a conv's
output at one row (col None) -> (B, O, 1, W') or one position -> (B, O, 1, 1);
``conv_transpose_window`` the same for a ``CroppedConvTranspose2d``; ``RowSplit``, a
causal conv at one position as a once-per-row part and a part of the position's own row.

A step is a chain of small ops on a few positions, so its cost is mostly per-op overhead:
``StepCache`` keeps what does not change during a generation (weights with their masks
folded in, as matrices laid out for ``torch.addmm``; each conv's terms from the rows above
the current one), and a position pass works on (B, C) matrices between its layers.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from latentar.nn.attention import CausalSelfAttention
from latentar.nn.masked import MaskedConv2d
from latentar.nn.shifted import CroppedConvTranspose2d, Nin, PaddedConv2d
from latentar.nn.transformer import SelfAttention


class ConvParts(NamedTuple):
    """What evaluating a conv at one row or position needs."""

    weight: torch.Tensor  # (O, I, kh, kw), masked for a MaskedConv2d
    matrix: torch.Tensor  # (O, kh·kw·I): the weight as a matrix over flattened (kh, kw, I) windows
    bias: torch.Tensor | None  # (O,)
    pad: tuple[int, ...]  # (left, right, top, bottom)
    stride: tuple[int, int]


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
    weight, matrix, bias, _, (sh, sw) = parts
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
        weight, _, bias, (left, right, _, _), _ = parts
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
        self.strip: torch.Tensor | None = None  # (B, I, above, W+): its padded rows above (``at``)
        self.inputs: list[torch.Tensor] = []  # (``at``) its inputs (B, I) so far, by padded column

    @classmethod
    def of(cls, conv: nn.Conv2d, parts: ConvParts, size: tuple[int, int]) -> RowSplit | None:
        """The split of ``conv`` over a map of ``size`` (H, W), or None."""
        kh, kw = parts.weight.shape[2:]
        left, _, top, _ = parts.pad
        if parts.stride != (1, 1) or tuple(conv.dilation) != (1, 1) or conv.groups != 1 or top < 0:
            return None
        # the taps with weight: a mask's pattern, or every tap of an unmasked conv
        live = (conv.mask.amax(dim=(0, 1)) > 0 if isinstance(conv, MaskedConv2d)
                else torch.ones(kh, kw, dtype=torch.bool)).tolist()
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


def in_sequence(layers: nn.Module | tuple) -> tuple:
    """One layer, a Sequential or a tuple of layers -> a tuple of layers."""
    if isinstance(layers, nn.Sequential):
        return tuple(layers)
    return layers if isinstance(layers, tuple) else (layers,)


class FullPass:
    """Every layer call on whole maps: the teacher-forced pass (training, ``log_prob``).

    ``sizes`` are the (H, W) of each level, needed by ``up`` only.
    """

    def __init__(self, sizes: list[tuple[int, int]] | None = None):
        self.sizes = sizes
        self.maps: dict[Any, torch.Tensor] = {}

    def due(self, level: int) -> bool:
        return True

    def conv(self, conv: nn.Module, x: torch.Tensor, level: int = 0) -> torch.Tensor:
        return conv(x)

    def conv_input(self, conv: nn.Module, z: torch.Tensor) -> torch.Tensor:
        return conv(z)

    def pointwise(self, layers: nn.Module | tuple, x: torch.Tensor) -> torch.Tensor:
        for layer in in_sequence(layers):
            x = layer(x)
        return x

    def down(self, conv: nn.Module, x: torch.Tensor, level: int) -> torch.Tensor:
        return conv(x)

    def up(self, deconv: CroppedConvTranspose2d, x: torch.Tensor, level: int) -> torch.Tensor:
        return deconv(x, self.sizes[level])

    def attend(self, attention: CausalSelfAttention, q_in: torch.Tensor, kv_in: torch.Tensor,
               kv_own: torch.Tensor) -> torch.Tensor:
        """q_in (B, Cq, H, W), kv_in (B, Ck, H, W), kv_own (B, Co, H, W) -> (B, n·dv, H, W)."""
        return attention(q_in, torch.cat([kv_in, kv_own], dim=1))

    def self_attend(self, attention: SelfAttention, x: torch.Tensor) -> torch.Tensor:
        """x (B, N, D) -> (B, N, D), position i attending to positions j <= i."""
        return attention(x, causal=True)

    def view(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def share(self, key: Any, x: torch.Tensor, level: int = 0) -> None:
        self.maps[key] = x

    def shared(self, key: Any, level: int = 0) -> torch.Tensor:
        return self.maps[key]


class KVCache(NamedTuple):
    """Keys (B, n, N, dk) and values (B, n, N, dv) of an attention's N raster positions."""

    keys: torch.Tensor
    values: torch.Tensor


class StepCache:
    """What a generation persists between steps: conv parts, padded input maps, shared maps,
    and per attention module its ``KVCache`` plus the inputs of the position it last saw."""

    def __init__(self, batch: int, sizes: list[tuple[int, int]]):
        self.batch, self.sizes = batch, sizes
        self.maps: dict[Any, Any] = {}
        self.convs: dict[nn.Module, ConvParts] = {}
        self.splits: dict[nn.Module, RowSplit | None] = {}
        self.plans: dict[Any, tuple] = {}
        self.kv: dict[CausalSelfAttention | SelfAttention, KVCache] = {}
        self.pending: dict[CausalSelfAttention, tuple[torch.Tensor, torch.Tensor]] = {}

    def parts(self, conv: nn.Module) -> ConvParts:
        """The conv's ``ConvParts``, computed once per generation (the weights do not change)."""
        if conv not in self.convs:
            self.convs[conv] = conv_parts(conv)
        return self.convs[conv]

    def split(self, conv: nn.Module, level: int) -> RowSplit | None:
        """The ``RowSplit`` of a conv evaluated at the positions of ``level`` (None: evaluate its
        whole window), made once per generation."""
        if conv not in self.splits:
            self.splits[conv] = RowSplit.of(conv, self.parts(conv), self.sizes[level])
        return self.splits[conv]

    def matrix(self, layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A 1×1 conv or a ``Nin`` as (weight matrix (O, I), bias (O,)), computed once per generation."""
        if isinstance(layer, nn.Linear):
            return layer.weight, layer.bias
        parts = self.parts(layer)
        return parts.matrix, parts.bias

    def plan(self, layers: nn.Module | tuple) -> tuple:
        """1×1 layers as functions of (B, I) matrices, made once per generation: a matrix
        product with the weight laid out (I, O) for ``torch.addmm``, ``torch.relu`` for a
        ``nn.ReLU``, any other layer as it is."""
        if layers not in self.plans:
            self.plans[layers] = tuple(map(self.step_function, in_sequence(layers)))
        return self.plans[layers]

    def step_function(self, layer: nn.Module):
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            matrix, bias = self.matrix(layer)
            columns = matrix.t()  # (I, O)
            return (lambda v: v @ columns) if bias is None else (lambda v: torch.addmm(bias, v, columns))
        if type(layer) is nn.ReLU and not layer.inplace:
            return torch.relu
        return layer

    def padded(self, conv: nn.Module, x: torch.Tensor, level: int) -> PaddedMap:
        if conv not in self.maps:
            self.maps[conv] = PaddedMap(self.batch, x.shape[1], self.sizes[level], self.parts(conv).pad, x)
        return self.maps[conv]

    def plain(self, key: Any, x: torch.Tensor, level: int) -> torch.Tensor:
        """A map (B, C, H, W) of ``level`` stored channels last, so that a position's channels,
        which the position passes read, are contiguous."""
        if key not in self.maps:
            self.maps[key] = x.new_zeros(self.batch, *self.sizes[level], x.shape[1]).permute(0, 3, 1, 2)
        return self.maps[key]

    def keys_values(self, attention: CausalSelfAttention | SelfAttention, like: torch.Tensor) -> KVCache:
        if attention not in self.kv:
            H, W = self.sizes[0]
            self.kv[attention] = KVCache(like.new_zeros(self.batch, attention.heads, H * W, attention.key_dim),
                                         like.new_zeros(self.batch, attention.heads, H * W, attention.value_dim))
        return self.kv[attention]

    def take(self, row: int, col: int) -> None:
        """The symbols of (row, col) are final: store the keys and values of that position for
        every attention evaluated there, from its ``kv_in`` and ``kv_own`` read there now."""
        i = row * self.sizes[0][1] + col
        for attention, (kv_in, kv_own) in self.pending.items():
            kv = torch.cat([kv_in, kv_own[:, :, row:row + 1, col:col + 1]], dim=1)  # (B, Ck + Co, 1, 1)
            keys, values = self.kv[attention]
            keys[:, :, i], values[:, :, i] = attention.key_value(kv)
        self.pending.clear()


class StepPass:
    """One generation step: every layer call evaluated at one row (``col`` None) or one position.

    A level is due when the step reaches a position attached to it; regions of levels
    that are not due are not computed (``due`` tells the network body to skip them).
    Pointwise layers (``Nin``) need no cache: ``conv`` applies them directly (at a position,
    as ``pointwise`` does). A conv evaluated at positions is evaluated at every position of
    its level, in raster order (``RowSplit`` keeps its rows).
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

    def conv(self, conv: nn.Module, x: torch.Tensor, level: int = 0) -> torch.Tensor:
        if isinstance(conv, Nin):
            return conv(x) if self.col is None else self.pointwise(conv, x)
        row, col = self.region(level)
        split = None if col is None else self.cache.split(conv, level)
        if split is not None:
            return as_position(split.at(row, col, as_matrix(x)))  # (B, O, 1, 1)
        target = self.cache.padded(conv, x, level)
        self.write(target, x, level)
        return conv_window(self.cache.parts(conv), target.data, row, col)

    def conv_input(self, conv: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """A conv of the network input z (B, I, H, W), complete up to this step."""
        split = None if self.col is None else self.cache.split(conv, 0)
        if split is not None:
            return as_position(split.at_input(self.row, self.col, z))  # (B, O, 1, 1)
        parts = self.cache.parts(conv)
        window = input_window(parts, z, self.row, self.col)
        return conv_window(parts, window, 0, None if self.col is None else 0)

    def pointwise(self, layers: nn.Module | tuple, x: torch.Tensor) -> torch.Tensor:
        """1×1 layers at this row or position: x (B, I, 1, ·) -> (B, O, 1, ·), as matrix products
        over channels (far cheaper than conv calls on a single position)."""
        if self.col is not None:
            v = as_matrix(x)  # (B, I)
            for step in self.cache.plan(layers):
                v = step(v)
            return as_position(v)
        v = x.movedim(1, -1)  # (B, 1, W, I)
        for layer in in_sequence(layers):
            v = F.linear(v, *self.cache.matrix(layer)) if isinstance(layer, (nn.Conv2d, nn.Linear)) else layer(v)
        return v.movedim(-1, 1)

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

    def attend(self, attention: CausalSelfAttention, q_in: torch.Tensor, kv_in: torch.Tensor,
               kv_own: torch.Tensor) -> torch.Tensor:
        """Attention at this position i (a position pass) over the cached positions < i:
        q_in, kv_in (B, ·, 1, 1) -> (B, n·dv, 1, 1). ``kv_own`` (B, Co, H, W) is a whole map
        whose value at i is set by i's own draw: ``StepCache.take`` reads it there afterwards."""
        i = self.row * self.cache.sizes[0][1] + self.col
        keys, values = self.cache.keys_values(attention, q_in)
        self.cache.pending[attention] = (kv_in, kv_own)
        return attention.attend_cached(q_in, keys[:, :, :i], values[:, :, :i])

    def self_attend(self, attention: SelfAttention, x: torch.Tensor) -> torch.Tensor:
        """Inclusive causal attention at this position i: x (B, 1, D) -> (B, 1, D). Its key
        and value enter the KV cache at i, and its query attends to the cached positions <= i."""
        i = self.row * self.cache.sizes[0][1] + self.col
        keys, values = self.cache.keys_values(attention, x)
        q, keys[:, :, i:i + 1], values[:, :, i:i + 1] = attention.project(x)  # each (B, n, 1, d)
        return attention.combine(q, keys[:, :, :i + 1], values[:, :, :i + 1], causal=False)

    def view(self, t: torch.Tensor) -> torch.Tensor:
        """A whole map (B, c, H, W) at this row (B, c, 1, W) or position (B, c, 1, 1)."""
        i, j = self.region(0)
        return t[:, :, i:i + 1] if j is None else t[:, :, i:i + 1, j:j + 1]

    def share(self, key: Any, x: torch.Tensor, level: int = 0) -> None:
        """Keep a row pass's result so that later position passes can read it (``shared``)."""
        i, _ = self.region(level)
        self.cache.plain(key, x, level)[:, :, i:i + 1] = x

    def shared(self, key: Any, level: int = 0) -> torch.Tensor:
        i, j = self.region(level)
        return self.cache.maps[key][:, :, i:i + 1, j:j + 1]

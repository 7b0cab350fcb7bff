"""Passes: a causal network written once, evaluated on whole maps or one generation step at a time
(incremental evaluation, Ramachandran et al. 2017).

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
- ``run.view(t, level=0)``: a map of a level known in full (context, positional channels)
  at what the pass computes there; ``run.share`` / ``run.shared``: hand a row pass's result to the
  position passes; ``run.due(level)``: whether the pass computes anything at a level.

``FullPass`` applies every call to whole maps (training, ``log_prob``). ``StepPass``
evaluates it at one row (``col`` None) or one position of a generation, reading and
writing a ``StepCache`` (``latentar.nn.caches``) that persists between steps: per conv a
zero-padded input map (``latentar.nn.windows.PaddedMap``), per attention module its keys and
values. The keys and values of a position include its own symbols (``kv_own``), which are
drawn after the position's params are computed: ``StepCache.take(row, col)`` stores them
once drawn. Level L is a map downsampled L times by stride 2; its position (i, j) is
attached to full-resolution position (i·2^L, j·2^L) and is computed at the step that reaches it.

A pass never switches on layer types: how a layer evaluates at a row or position is its rule
in ``latentar.nn.stepping`` (a conv's window, a 1×1 layer's matrix).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentar.nn.attention import CausalSelfAttention
from latentar.nn.attention_patterns import ring_rows, span
from latentar.nn.caches import StepCache, in_sequence
from latentar.nn.shifted import CroppedConvTranspose2d
from latentar.nn.stepping import LINEAR, WINDOWS
from latentar.nn.transformer import SelfAttention
from latentar.nn.windows import PaddedMap, as_matrix, as_position, conv_transpose_window, conv_window, input_window


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
        assert self.sizes is not None, "up needs the sizes of the levels"
        return deconv(x, self.sizes[level])

    def attend(self, attention: CausalSelfAttention, q_in: torch.Tensor, kv_in: torch.Tensor,
               kv_own: torch.Tensor) -> torch.Tensor:
        """q_in (B, Cq, H, W), kv_in (B, Ck, H, W), kv_own (B, Co, H, W) -> (B, n·dv, H, W)."""
        return attention(q_in, torch.cat([kv_in, kv_own], dim=1))

    def self_attend(self, attention: SelfAttention, x: torch.Tensor) -> torch.Tensor:
        """x (B, N, D) -> (B, N, D), position i attending to positions j <= i."""
        return attention(x, causal=True)

    def view(self, t: torch.Tensor, level: int = 0) -> torch.Tensor:
        return t

    def share(self, key: Any, x: torch.Tensor, level: int = 0) -> None:
        self.maps[key] = x

    def shared(self, key: Any, level: int = 0) -> torch.Tensor:
        return self.maps[key]


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
        if WINDOWS.find(conv) is None and LINEAR.find(conv) is not None:  # a 1×1 layer (a ``Nin``)
            return conv(x) if self.col is None else self.pointwise(conv, x)
        row, col = self.region(level)
        if col is not None and (split := self.cache.split(conv, level)) is not None:
            return as_position(split.at(row, col, as_matrix(x)))  # (B, O, 1, 1)
        target = self.cache.padded(conv, x, level)
        self.write(target, x, level)
        return conv_window(self.cache.parts(conv), target.data, row, col)

    def conv_input(self, conv: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """A conv of the network input z (B, I, H, W), complete up to this step."""
        if self.col is not None and (split := self.cache.split(conv, 0)) is not None:
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
            v = F.linear(v, *self.cache.matrix(layer)) if LINEAR.find(layer) is not None else layer(v)
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
        assert self.col is not None, "attention steps at positions"
        i = self.row * self.cache.sizes[0][1] + self.col
        keys, values = self.cache.keys_values(attention, q_in)
        self.cache.pending[attention] = (kv_in, kv_own)
        return attention.attend_cached(q_in, keys[:, :, :i], values[:, :, :i])

    def self_attend(self, attention: SelfAttention, x: torch.Tensor) -> torch.Tensor:
        """Inclusive causal attention at this position i: x (B, 1, D) -> (B, 1, D). Its key
        and value enter the KV cache at i, and its query attends to the cached positions <= i; under
        an attention pattern (``attention.pattern``) the cache is a ring of the positions the pattern
        can still reach (``attention_patterns.span``), read through the
        pattern's row."""
        assert self.col is not None, "attention steps at positions"
        (H, W), pattern = self.cache.sizes[0], attention.pattern
        i = self.row * W + self.col
        if pattern is None:
            keys, values = self.cache.keys_values(attention, x)
            q, keys[:, :, i:i + 1], values[:, :, i:i + 1] = attention.project(x)  # each (B, n, 1, d)
            return attention.combine(q, keys[:, :, :i + 1], values[:, :, :i + 1], causal=False)
        # an attention pattern: a ring of the last ``span`` slots, read through the pattern's row
        size = span(pattern, H * W)
        keys, values = self.cache.keys_values(attention, x, size)
        place = i % size
        q, keys[:, :, place:place + 1], values[:, :, place:place + 1] = attention.project(x)
        rows = ring_rows(pattern, H * W, size, x.device)
        return attention.combine(q, keys, values, causal=False, mask=rows[i:i + 1])

    def view(self, t: torch.Tensor, level: int = 0) -> torch.Tensor:
        """A whole map (B, c, H, W) of ``level`` at this row (B, c, 1, W) or position (B, c, 1, 1) there."""
        i, j = self.region(level)
        return t[:, :, i:i + 1] if j is None else t[:, :, i:i + 1, j:j + 1]

    def share(self, key: Any, x: torch.Tensor, level: int = 0) -> None:
        """Keep a row pass's result so that later position passes can read it (``shared``)."""
        i, _ = self.region(level)
        self.cache.plain(key, x, level)[:, :, i:i + 1] = x

    def shared(self, key: Any, level: int = 0) -> torch.Tensor:
        i, j = self.region(level)
        assert j is not None, "position passes read what row passes shared"
        return self.cache.maps[key][:, :, i:i + 1, j:j + 1]

"""What a generation keeps between its steps (``StepCache``): the parts of every conv and
1×1 layer, computed once (the weights do not change during a generation), the padded input
maps of the convs, maps handed from row passes to position passes, and per attention module
its keys and values (``KVCache``).

A step is a chain of small ops on a few positions, so its cost is mostly per-op overhead: the
cache keeps weights with their masks folded in, as matrices laid out for ``torch.addmm``, and
1×1 layers as functions of (B, C) matrices (``plan``). How a layer type becomes those parts
is its rule in ``latentar.nn.stepping``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, cast

import torch
from torch import nn

from latentar.nn.attention import CausalSelfAttention
from latentar.nn.stepping import ELEMENTWISE, LINEAR, ConvParts, conv_parts, linear_parts
from latentar.nn.transformer import SelfAttention
from latentar.nn.windows import PaddedMap, RowSplit


def in_sequence(layers: nn.Module | tuple) -> tuple:
    """One layer, a Sequential or a tuple of layers -> a tuple of layers."""
    if isinstance(layers, nn.Sequential):
        return tuple(layers)
    return layers if isinstance(layers, tuple) else (layers,)


class KVCache(NamedTuple):
    """Keys (B, n, N, dk) and values (B, n, N, dv) of an attention's N raster positions (or, under
    an attention pattern, of a ring of the last N it can still reach)."""

    keys: torch.Tensor
    values: torch.Tensor


class StepCache:
    """What a generation persists between steps: conv parts, padded input maps, shared maps,
    and per attention module its ``KVCache`` plus the inputs of the position it last saw."""

    def __init__(self, batch: int, sizes: list[tuple[int, int]]):
        self.batch, self.sizes = batch, sizes
        self.maps: dict[Any, Any] = {}
        self.convs: dict[nn.Module, ConvParts] = {}
        self.matrices: dict[nn.Module, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.splits: dict[nn.Module, RowSplit | None] = {}
        self.plans: dict[Any, tuple] = {}
        self.kv: dict[CausalSelfAttention | SelfAttention, KVCache] = {}
        self.pending: dict[CausalSelfAttention, tuple[torch.Tensor, torch.Tensor]] = {}

    def parts(self, conv: nn.Module) -> ConvParts:
        """The conv's ``ConvParts`` by its ``WINDOWS`` rule, computed once per generation."""
        if conv not in self.convs:
            self.convs[conv] = conv_parts(conv)
        return self.convs[conv]

    def split(self, conv: nn.Module, level: int) -> RowSplit | None:
        """The ``RowSplit`` of a conv evaluated at the positions of ``level`` (None: evaluate its
        whole window), made once per generation."""
        if conv not in self.splits:
            # a layer with a ``WINDOWS`` rule is a conv
            self.splits[conv] = RowSplit.of(cast(nn.Conv2d, conv), self.parts(conv), self.sizes[level])
        return self.splits[conv]

    def matrix(self, layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A layer that maps each position's channels alone (a 1×1 conv, a ``Nin``) as (weight matrix
        (O, I), bias (O,)) by its ``LINEAR`` rule, computed once per generation."""
        if layer not in self.matrices:
            self.matrices[layer] = linear_parts(layer)
        return self.matrices[layer]

    def plan(self, layers: nn.Module | tuple) -> tuple:
        """1×1 layers as functions of (B, I) matrices, made once per generation: a matrix
        product with the weight laid out (I, O) for ``torch.addmm`` (a layer with a ``LINEAR``
        rule), its ``ELEMENTWISE`` function (``torch.relu`` for a ``nn.ReLU``), or the layer itself."""
        if layers not in self.plans:
            self.plans[layers] = tuple(map(self.step_function, in_sequence(layers)))
        return self.plans[layers]

    def step_function(self, layer: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        if LINEAR.find(layer) is not None:
            matrix, bias = self.matrix(layer)
            columns = matrix.t()  # (I, O)
            return (lambda v: v @ columns) if bias is None else (lambda v: torch.addmm(bias, v, columns))
        elementwise = ELEMENTWISE.find(layer)
        return layer if elementwise is None else elementwise(layer)

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

    def keys_values(self, attention: CausalSelfAttention | SelfAttention, like: torch.Tensor,
                    slots: int | None = None) -> KVCache:
        """The attention's keys and values, made at the first call: room for ``slots`` positions
        (None: all H·W of the grid)."""
        if attention not in self.kv:
            H, W = self.sizes[0]
            slots = H * W if slots is None else slots
            self.kv[attention] = KVCache(like.new_zeros(self.batch, attention.heads, slots, attention.key_dim),
                                         like.new_zeros(self.batch, attention.heads, slots, attention.value_dim))
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

"""How each layer type is evaluated at one row or one position of a generation.

The passes and caches of incremental evaluation (``latentar.nn.passes``, ``nn.caches``)
never switch on layer types: they look a layer up in three tables of rules, each keyed by
layer type and searched along the layer's class hierarchy (the nearest registered class wins):

- ``WINDOWS``: a conv that reads neighbouring positions -> its ``ConvParts`` (the weight it
  applies, its padding, its stride, the taps a mask leaves live);
- ``LINEAR``: a map of each position's channels alone -> (matrix (O, I), bias (O,) or None);
- ``ELEMENTWISE``: a function of each element -> a cheaper callable than the module call.

A layer in none of them that a pass applies position by position is called as it is (any
module that works on each position alone, such as ``nn.ELU``). A new layer type registers
its rules next to its class, e.g.

    @WINDOWS.register(MyConv)
    def my_conv_parts(conv: MyConv) -> ConvParts:
        return window_parts(conv, weight=conv.weight * conv.mask)

so that no file of ``nn/`` changes. The rules of torch's own layers are registered here;
``MaskedConv2d`` and ``PaddedConv2d`` register theirs in their modules.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, NamedTuple, TypeVar

import torch
from torch import nn

from latentar.registry import Registry

R = TypeVar("R")
M = TypeVar("M", bound=nn.Module)


class LayerRules(Generic[R]):
    """A table of rules by layer type, each mapping a layer to an ``R``, e.g.
    ``WINDOWS.register(MaskedConv2d)(masked_conv_parts)``; a layer's rule is that of the nearest
    class in its hierarchy that has one."""

    def __init__(self, table: str):
        self.table = table  # its name in this module, for the error message
        # a rule takes the layer type it is registered for, which ``find`` guarantees
        self._rules: Registry[Callable[[Any], R]] = Registry(f"{table.lower()} rule of layer type")
        self._found: dict[type, Callable[[Any], R] | None] = {}  # by layer type: lookups run at every generation step

    def register(self, cls: type[M]) -> Callable[[Callable[[M], R]], Callable[[M], R]]:
        add = self._rules.register(type_name(cls))

        def add_rule(rule: Callable[[M], R]) -> Callable[[M], R]:
            self._found.clear()
            return add(rule)

        return add_rule

    def find(self, layer: nn.Module) -> Callable[[nn.Module], R] | None:
        """The rule of ``layer``, or None."""
        cls = type(layer)
        if cls not in self._found:
            names = (type_name(base) for base in cls.__mro__)
            self._found[cls] = next((self._rules.get(name) for name in names if name in self._rules), None)
        return self._found[cls]

    def of(self, layer: nn.Module) -> Callable[[nn.Module], R]:
        """The rule of ``layer``; a ``TypeError`` naming the layer type when it has none."""
        rule = self.find(layer)
        if rule is None:
            name = type(layer).__name__
            raise TypeError(f"layer type {name} has no rule in latentar.nn.stepping.{self.table} for "
                            f"incremental evaluation; register one with {self.table}.register({name})")
        return rule


def type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class ConvParts(NamedTuple):
    """What evaluating a conv at one row or position needs."""

    weight: torch.Tensor  # (O, I, kh, kw), masked for a MaskedConv2d
    matrix: torch.Tensor  # (O, kh·kw·I): the weight as a matrix over flattened (kh, kw, I) windows
    bias: torch.Tensor | None  # (O,)
    pad: tuple[int, ...]  # (left, right, top, bottom)
    stride: tuple[int, int]
    taps: torch.Tensor | None  # bool (kh, kw): the taps that may carry weight (a mask's); None: every tap


WINDOWS: LayerRules[ConvParts] = LayerRules("WINDOWS")
LINEAR: LayerRules[tuple[torch.Tensor, torch.Tensor | None]] = LayerRules("LINEAR")
ELEMENTWISE: LayerRules[Callable[[torch.Tensor], torch.Tensor]] = LayerRules("ELEMENTWISE")


def window_parts(conv: nn.Conv2d, weight: torch.Tensor | None = None, pad: tuple[int, ...] | None = None,
                 taps: torch.Tensor | None = None) -> ConvParts:
    """The ``ConvParts`` of ``conv`` applying ``weight`` (default: its own) with ``pad`` (default:
    its symmetric ``padding``); ``taps`` as in ``ConvParts``."""
    weight = conv.weight if weight is None else weight
    if pad is None:
        assert not isinstance(conv.padding, str), f"padding={conv.padding!r} has no pad; give it"
        ph, pw = conv.padding
        pad = (pw, pw, ph, ph)
    sh, sw = conv.stride
    matrix = weight.permute(0, 2, 3, 1).flatten(1)  # (O, kh·kw·I): windows flatten channels last
    return ConvParts(weight, matrix, conv.bias, tuple(pad), (sh, sw), taps)


WINDOWS.register(nn.Conv2d)(window_parts)


def conv_parts(conv: nn.Module) -> ConvParts:
    """The ``ConvParts`` of a conv, by its ``WINDOWS`` rule."""
    return WINDOWS.of(conv)(conv)


@LINEAR.register(nn.Linear)
def linear_layer_parts(layer: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    return layer.weight, layer.bias


@LINEAR.register(nn.Conv2d)
def pointwise_conv_parts(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A 1×1 conv as (matrix (O, I), bias): its ``ConvParts`` matrix."""
    parts = conv_parts(conv)
    return parts.matrix, parts.bias


def linear_parts(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A layer that maps each position's channels alone as (matrix (O, I), bias (O,) or None)."""
    return LINEAR.of(layer)(layer)


@ELEMENTWISE.register(nn.ReLU)
def relu_function(layer: nn.ReLU) -> Callable[[torch.Tensor], torch.Tensor]:
    return layer if layer.inplace else torch.relu

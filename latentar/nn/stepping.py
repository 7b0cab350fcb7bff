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

from typing import Callable, Generic, NamedTuple, TypeVar

import torch
from torch import nn

Rule = TypeVar("Rule")


class LayerRules(Generic[Rule]):
    """A table of rules by layer type, e.g. ``WINDOWS.register(MaskedConv2d)(masked_parts)``."""

    def __init__(self, kind: str):
        self.kind = kind
        self._rules: dict[type, Rule] = {}

    def register(self, cls: type) -> Callable[[Rule], Rule]:
        def add(rule: Rule) -> Rule:
            if cls in self._rules:
                raise ValueError(f"layer type {cls.__name__} already has a {self.kind} rule")
            self._rules[cls] = rule
            return rule

        return add

    def find(self, layer: nn.Module) -> Rule | None:
        """The rule of the nearest class of ``layer`` that has one, or None."""
        return next((self._rules[cls] for cls in type(layer).__mro__ if cls in self._rules), None)

    def of(self, layer: nn.Module) -> Rule:
        """The rule of ``layer``; a ``TypeError`` naming the layer type when it has none."""
        rule = self.find(layer)
        if rule is None:
            raise TypeError(f"layer type {type(layer).__name__} has no {self.kind} rule for incremental "
                            f"evaluation; register one with latentar.nn.stepping.{self.kind.upper()}"
                            f".register({type(layer).__name__})")
        return rule


class ConvParts(NamedTuple):
    """What evaluating a conv at one row or position needs."""

    weight: torch.Tensor  # (O, I, kh, kw), masked for a MaskedConv2d
    matrix: torch.Tensor  # (O, kh·kw·I): the weight as a matrix over flattened (kh, kw, I) windows
    bias: torch.Tensor | None  # (O,)
    pad: tuple[int, ...]  # (left, right, top, bottom)
    stride: tuple[int, int]
    taps: torch.Tensor | None  # bool (kh, kw): the taps that may carry weight (a mask's); None: every tap


WINDOWS: LayerRules[Callable[[nn.Module], ConvParts]] = LayerRules("windows")
LINEAR: LayerRules[Callable[[nn.Module], tuple[torch.Tensor, torch.Tensor | None]]] = LayerRules("linear")
ELEMENTWISE: LayerRules[Callable[[nn.Module], Callable[[torch.Tensor], torch.Tensor]]] = LayerRules("elementwise")


def window_parts(conv: nn.Conv2d, weight: torch.Tensor | None = None, pad: tuple[int, ...] | None = None,
                 taps: torch.Tensor | None = None) -> ConvParts:
    """The ``ConvParts`` of ``conv`` applying ``weight`` (default: its own) with ``pad`` (default:
    its symmetric ``padding``); ``taps`` as in ``ConvParts``."""
    weight = conv.weight if weight is None else weight
    if pad is None:
        ph, pw = conv.padding
        pad = (pw, pw, ph, ph)
    matrix = weight.permute(0, 2, 3, 1).flatten(1)  # (O, kh·kw·I): windows flatten channels last
    return ConvParts(weight, matrix, conv.bias, tuple(pad), tuple(conv.stride), taps)


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

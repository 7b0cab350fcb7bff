"""Class conditioning: learned per-class bias vectors added to a network's units.

Every class-conditional prior builds one ``class_biases(rows, sizes)`` and reads it the same
way: labels long (B,) -> a list with one bias (B, size) per slot of ``sizes``, in order (a
slot is what one unit adds: a block's input, a gate, a layer's residual stream). Without
classes every slot is None, so a network adds nothing.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class ClassBiases(nn.Embedding):
    """One table (rows, Σ sizes) of per-class biases: labels long (B,) -> [(B, size) per slot].

    ``rows`` counts the classes, plus the null class of classifier-free guidance. The table
    starts at zero, so a freshly built conditional prior computes what the unconditional one does.
    """

    def __init__(self, rows: int, sizes: Sequence[int]):
        super().__init__(rows, sum(sizes))
        nn.init.zeros_(self.weight)
        self.sizes = tuple(sizes)

    # a list of biases where nn.Embedding returns one tensor; subclassing keeps the ``weight`` key
    def forward(self, labels: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        return list(super().forward(labels).split(self.sizes, dim=1))


class NoClassBiases:
    """The biases of an unconditional network: None for every slot (no parameters)."""

    def __init__(self, sizes: Sequence[int]):
        self.sizes = tuple(sizes)

    def __call__(self, labels: torch.Tensor | None) -> list[torch.Tensor | None]:
        return [None] * len(self.sizes)


def class_biases(rows: int | None, sizes: Sequence[int]) -> ClassBiases | NoClassBiases:
    """Per-class biases of ``sizes`` for ``rows`` label rows (``PriorSpec.label_rows``); None rows:
    an unconditional network."""
    return NoClassBiases(sizes) if rows is None else ClassBiases(rows, sizes)

"""Class and augmentation conditioning: learned bias vectors added to a network's units.

Every conditional prior builds one ``class_biases(rows, sizes, augment_sizes)`` and reads it the
same way: labels long (B,) and augmentation ids long (B,) -> a list with one bias (B, size) per
slot of ``sizes``, in order (a slot is what one unit adds: a block's input, a gate, a layer's
residual stream). Without classes or augmentations every slot is None, so a network adds nothing.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from latentar.augmentations import digits


class ClassBiases(nn.Embedding):
    """One table (rows + Σ augment_sizes, Σ sizes) of biases -> [(B, size) per slot].

    The first ``rows`` rows are per class (the classes, plus the null class of classifier-free
    guidance); then one row per (augmentation type, value), as distribution augmentation sums
    one learned embedding per type: an id's bias is the sum of its types' rows (``augment_sizes``:
    the values of each type, in order). The table starts at zero, so a freshly built conditional
    prior computes what the unconditional one does.
    """

    augment_rows: torch.Tensor  # long (T,): the first row of each augmentation type

    def __init__(self, rows: int, sizes: Sequence[int], augment_sizes: Sequence[int] = ()):
        super().__init__(rows + sum(augment_sizes), sum(sizes))
        nn.init.zeros_(self.weight)
        self.sizes, self.rows = tuple(sizes), rows
        self.augment_sizes = tuple(augment_sizes)
        self.register_buffer("augment_rows", torch.tensor([rows, *augment_sizes]).cumsum(0)[:-1], persistent=False)

    # a list of biases where nn.Embedding returns one tensor; subclassing keeps the ``weight`` key
    def forward(self, labels: torch.Tensor | None,  # type: ignore[override]
                augment: torch.Tensor | None = None) -> list[torch.Tensor]:
        """labels long (B,) (None: a table without classes) and augmentation ids long (B,) (None:
        the identity for every grid) -> [(B, size) per slot]."""
        index = [] if labels is None else [labels[:, None]]  # (B, 1)
        if self.augment_sizes:
            values = digits(augment, self.augment_sizes) if augment is not None else torch.zeros(
                1, len(self.augment_sizes), dtype=torch.long, device=self.weight.device)  # (B or 1, T)
            index.append((values + self.augment_rows).expand(len(labels) if labels is not None else len(values), -1))
        return list(super().forward(torch.cat(index, dim=1)).sum(1).split(self.sizes, dim=1))


class NoClassBiases:
    """The biases of an unconditional network: None for every slot (no parameters)."""

    def __init__(self, sizes: Sequence[int]):
        self.sizes = tuple(sizes)

    def __call__(self, labels: torch.Tensor | None, augment: torch.Tensor | None = None) -> list[torch.Tensor | None]:
        return [None] * len(self.sizes)


def class_biases(rows: int | None, sizes: Sequence[int],
                 augment_sizes: Sequence[int] = ()) -> ClassBiases | NoClassBiases:
    """Biases of ``sizes`` for ``rows`` label rows (``PriorSpec.label_rows``; None: no classes) and
    the augmentation types of ``augment_sizes`` (``PriorSpec.augment_sizes``); neither: none."""
    if rows is None and not augment_sizes:
        return NoClassBiases(sizes)
    return ClassBiases(rows or 0, sizes, augment_sizes)

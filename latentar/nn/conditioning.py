"""Class conditioning: one learned bias vector per class, added to a network's units."""

from __future__ import annotations

from torch import nn


def class_bias_table(num_classes: int | None, size: int) -> nn.Embedding | None:
    """A (num_classes, size) table of per-class biases that starts at zero, so a freshly built
    conditional prior computes what the unconditional one does; None without classes."""
    if num_classes is None:
        return None
    table = nn.Embedding(num_classes, size)
    nn.init.zeros_(table.weight)
    return table

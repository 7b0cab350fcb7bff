"""Conditioning: learned biases added to a network's units.

Every conditional prior builds one ``class_biases(rows, sizes, augment_sizes)`` and reads it the
same way: labels long (B,) and augmentation ids long (B,) -> a list with one bias (B, size) per
slot of ``sizes``, in order (a slot is what one unit adds: a block's input, a gate, a layer's
residual stream). Without classes or augmentations every slot is None, so a network adds nothing.

A spatial context (codes known in full: VQ-VAE-2 top codes, the coarse level of an auxiliary
pyramid) goes through ``ContextNet``, non-causal convolutions to features at the grid's size; a
prior either feeds those features to its units itself (PixelSNAIL) or reads them as bias maps,
one 1×1 convolution per slot (``context_biases``: Gated PixelCNN's V·s), added like the class bias.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
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


class ContextNet(nn.Module):
    """Context codes long (B, h, w) -> features (B, F_c, H, W), non-causal: embedded, ``blocks``
    residual pairs of 3×3 convolutions, then upsampled (nearest) to the grid's (H, W)."""

    def __init__(self, symbols: int, channels: int, blocks: int):
        super().__init__()
        self.embed = nn.Embedding(symbols, channels)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ELU(), nn.Conv2d(channels, channels, 3, padding=1),
                          nn.ELU(), nn.Conv2d(channels, channels, 3, padding=1))
            for _ in range(blocks))

    def forward(self, context: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        c = rearrange(self.embed(context), "b h w f -> b f h w")  # (B, F_c, h, w)
        for block in self.blocks:
            c = c + block(c)
        return F.interpolate(c, size=size, mode="nearest")  # (B, F_c, H, W)


class ContextBiases(nn.Module):
    """Context codes long (B, h, w) -> [(B, size, H, W) per slot]: the ``ContextNet`` features,
    then a 1×1 convolution per slot (one convolution to Σ sizes channels, split)."""

    def __init__(self, symbols: int, channels: int, blocks: int, sizes: Sequence[int]):
        super().__init__()
        self.sizes = tuple(sizes)
        self.net = ContextNet(symbols, channels, blocks)
        self.project = nn.Conv2d(channels, sum(self.sizes), 1)

    def forward(self, context: torch.Tensor, size: tuple[int, int]) -> list[torch.Tensor]:
        return list(self.project(self.net(context, size)).split(self.sizes, dim=1))


class NoContextBiases:
    """The context biases of a network built without a spatial context: None per slot."""

    def __init__(self, sizes: Sequence[int]):
        self.sizes = tuple(sizes)

    def __call__(self, context: torch.Tensor | None, size: tuple[int, int]) -> list[torch.Tensor | None]:
        return [None] * len(self.sizes)


def context_biases(symbols: int | None, channels: int, blocks: int,
                   sizes: Sequence[int]) -> ContextBiases | NoContextBiases:
    """Bias maps of ``sizes`` from a context of ``symbols`` codes (``PriorSpec.context_symbols``; None:
    no context, no parameters) through a ``ContextNet`` of ``channels`` features and ``blocks`` blocks."""
    if symbols is None:
        return NoContextBiases(sizes)
    return ContextBiases(symbols, channels, blocks, sizes)


def conditioned(run, x: torch.Tensor, bias: torch.Tensor | None, context: torch.Tensor | None,
                level: int = 0) -> torch.Tensor:
    """x (B, n, R, S) of a pass ``run`` (``latentar.nn.passes``) at ``level`` plus a class bias (B, n)
    and a context bias map (B, n, H, W) of that level, read at x's region (``run.view``), each where given."""
    if bias is not None:
        x = x + bias[:, :, None, None]
    return x if context is None else x + run.view(context, level)

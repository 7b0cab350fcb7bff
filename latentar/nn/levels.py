"""A table of learned vectors per pixel level, read at the floats a network receives.

Pixels enter a network as floats v = 2·s/(K-1) - 1 (``latentar.nn.inputs``); a token model
that gives each channel's K levels their own embedding (the Image Transformer's 256-entry
table per channel) reads its table at those floats.
"""

from __future__ import annotations

import torch
from torch import nn


class LevelTable(nn.Module):
    """One learned D-vector per level s of K, for each of C channels: pixel floats v (..., C)
    -> (..., C, D).

    At v = 2·s/(K-1) - 1 the output is row s of channel c's table; between two levels it is
    the linear interpolation of their rows. The values a network sees are table rows, and the
    output stays a function of the input floats, so a gradient with respect to them shows which
    inputs a network reads (the causality tests rely on it)."""

    def __init__(self, channels: int, levels: int, dim: int):
        super().__init__()
        if levels < 2:
            raise ValueError(f"a level table needs at least 2 levels, got {levels}")
        self.channels, self.levels = channels, levels  # C, K
        self.rows = nn.Embedding(channels * levels, dim)  # channel c's level s at row c·K + s

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        C, K = self.channels, self.levels
        level = (v + 1.0) * ((K - 1) / 2)  # (..., C): s at a level, fractional between levels
        low = level.detach().round().clamp(0, K - 2).long()  # the lower row of the pair read
        weight = (level - low)[..., None]  # (..., C, 1): 0 at level low, 1 at low + 1
        first = torch.arange(C, device=v.device) * K  # (C,) channel c's first row
        below, above = self.rows(first + low), self.rows(first + low + 1)  # (..., C, D)
        return below * (1 - weight) + above * weight  # exactly a row at weight 0 or 1

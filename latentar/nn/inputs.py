"""How symbol grids enter a network as floats.

Pixels are ordinal: symbol s of K becomes the float 2·s/(K-1) - 1 in [-1, 1]
(one float per channel). Codes are not ordinal: each symbol gets a learned embedding
of ``embed_dim`` floats. Either way channel c's floats form contiguous block c, so
masked convolutions can group them.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

SYMBOL_KINDS = ("pixels", "codes")


class SymbolInput(nn.Module):
    """x long (B, C, H, W) -> floats (B, C·E, H, W), E = 1 for pixels, embed_dim for codes."""

    def __init__(self, symbols: str, num_symbols: int, embed_dim: int):
        super().__init__()
        if symbols not in SYMBOL_KINDS:
            raise ValueError(f"symbols must be one of {SYMBOL_KINDS}, got {symbols!r}")
        self.symbols = symbols
        self.num_symbols = num_symbols
        self.embedding = nn.Embedding(num_symbols, embed_dim) if symbols == "codes" else None
        self.dim = embed_dim if symbols == "codes" else 1  # E

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embedding is None:
            return x.float() * (2.0 / max(self.num_symbols - 1, 1)) - 1.0
        return rearrange(self.embedding(x), "b c h w e -> b (c e) h w")

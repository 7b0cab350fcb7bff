"""Strictly causal multi-head self-attention over raster positions.

Position i = h·W + w attends to positions j < i only (PixelSNAIL, Chen et al. 2018).
Queries and keys/values come from separate inputs so that a prior can give the keys
and values something the query position must not see about itself (its own symbol,
which is known for every j < i). The first position has nothing to attend to: its
output is exactly zero, with zero gradient to every key and value.

``forward`` evaluates a whole map; ``key_value`` and ``attend_cached`` are the same
attention one position at a time, for the KV cache of incremental sampling (kept by
``latentar.nn.caches``, read by ``latentar.nn.passes``: ``run.attend``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from latentar.nn.shifted import Nin


def attend_strictly_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention of query i to keys j < i: q (B, n, N, dk), k (B, n, N, dk),
    v (B, n, N, dv) -> (B, n, N, dv); the first query, which has no key, gets exactly zero.

    Query i attends to keys 0..i-1, so queries 1.. over keys ..N-2 is the inclusive causal
    pattern that ``scaled_dot_product_attention`` fuses (no N×N mask or score matrix is kept).
    Its fused CPU kernel wants one head width for q, k and v: the narrower ones are padded
    with zeros, which adds nothing to a score or an output; the scale stays 1/√dk. On a CPU
    the kernel runs in float32 even under bf16 autocast: its float32 backward is faster there
    (docs/benchmarks.md); the output comes back in v's dtype.
    """
    B, n, _, dv = v.shape
    width = max(q.shape[-1], dv)
    dtype = v.dtype
    if v.device.type == "cpu":
        q, k, v = q.float(), k.float(), v.float()
    pad = lambda t: F.pad(t, (0, width - t.shape[-1]))  # noqa: E731
    with torch.autocast("cpu", enabled=False):  # CPU autocast only; a GPU's stays as it is
        rest = F.scaled_dot_product_attention(pad(q[:, :, 1:]), pad(k[:, :, :-1]), pad(v[:, :, :-1]),
                                              is_causal=True, scale=q.shape[-1] ** -0.5)[..., :dv]
    return torch.cat([rest.new_zeros(B, n, 1, dv), rest], dim=2).to(dtype)


class CausalSelfAttention(nn.Module):
    """q_in (B, Cq, H, W), kv_in (B, Ckv, H, W) -> (B, heads·value_dim, H, W)."""

    def __init__(self, query_channels: int, kv_channels: int, heads: int, key_dim: int, value_dim: int):
        super().__init__()
        if min(heads, key_dim, value_dim) < 1:
            raise ValueError(f"heads, key_dim and value_dim must be >= 1, "
                             f"got {heads}, {key_dim}, {value_dim}")
        self.heads, self.key_dim, self.value_dim = heads, key_dim, value_dim
        self.out_channels = heads * value_dim
        self.query = Nin(query_channels, heads * key_dim)  # 1×1 projections
        self.key = Nin(kv_channels, heads * key_dim)
        self.value = Nin(kv_channels, heads * value_dim)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        """(B, n·d, H, W) -> (B, n, H·W, d)."""
        return rearrange(t, "b (n d) h w -> b n (h w) d", n=self.heads)

    def forward(self, q_in: torch.Tensor, kv_in: torch.Tensor) -> torch.Tensor:
        H, W = q_in.shape[-2:]
        q = self._split(self.query(q_in))  # (B, n, N, dk)
        k = self._split(self.key(kv_in))  # (B, n, N, dk)
        v = self._split(self.value(kv_in))  # (B, n, N, dv)
        return rearrange(attend_strictly_causal(q, k, v), "b n (h w) d -> b (n d) h w", h=H)

    # ---- one position at a time -----------------------------------------------------------
    def key_value(self, kv_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The key (B, n, dk) and value (B, n, dv) of one position: kv_in (B, Ckv, 1, 1)."""
        return (self.key(kv_in).view(-1, self.heads, self.key_dim),
                self.value(kv_in).view(-1, self.heads, self.value_dim))

    def attend_cached(self, q_in: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Output at position i: q_in (B, Cq, 1, 1), keys (B, n, i, dk) and values (B, n, i, dv)
        of the positions < i -> (B, n·dv, 1, 1); exactly zero at the first position."""
        if keys.shape[2] == 0:  # nothing to attend to
            return q_in.new_zeros(q_in.shape[0], self.out_channels, 1, 1)
        q = self.query(q_in).view(-1, self.heads, 1, self.key_dim)  # (B, n, 1, dk)
        # every cached position is allowed: no mask
        scores = q @ keys.transpose(-1, -2) * self.key_dim ** -0.5  # (B, n, 1, i)
        out = torch.softmax(scores, dim=-1) @ values  # (B, n, 1, dv)
        return out.view(-1, self.out_channels, 1, 1)

"""Categorical head: a softmax over K symbols for each channel of each position."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from latentar.heads.base import Head, register_head


@register_head("categorical")
class CategoricalHead(Head):
    """params (B, C·K, H, W): block c holds the K logits of channel c.

    With ``couple_channels`` (whole-pixel backbones and C > 1), channel c's logits get
    a learned term ``table[c, c', x_c']`` for every earlier channel c' < c of the same
    pixel, so p(x) = Π_c p(x_c | earlier pixels, x_<c) stays an exact distribution.
    """

    def __init__(self, channels: int, num_symbols: int, couple_channels: bool):
        super().__init__(channels, num_symbols, couple_channels)
        self.num_params = channels * num_symbols
        self.coupling = None
        if couple_channels and channels > 1:
            # (C, C, K, K): logit bonus for channel c and symbol k given channel c' took symbol s
            self.coupling = nn.Parameter(torch.zeros(channels, channels, num_symbols, num_symbols))

    def _coupling_bonus(self, x: torch.Tensor, c: int) -> torch.Tensor:
        """x long (N, C) -> (N, K) logit bonus of channel c from channels < c."""
        assert self.coupling is not None  # only coupled channels get a bonus
        bonus = self.coupling.new_zeros(x.shape[0], self.num_symbols)
        for prev in range(c):
            bonus = bonus + self.coupling[c, prev][x[:, prev]]  # (N, K)
        return bonus

    def logits(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """params (B, C·K, H, W), x (B, C, H, W) -> logits (B, C, H, W, K)."""
        logits = rearrange(params, "b (c k) h w -> b c h w k", c=self.channels)
        if self.coupling is None:
            return logits
        flat = rearrange(x, "b c h w -> (b h w) c")
        bonus = torch.stack([self._coupling_bonus(flat, c) for c in range(self.channels)], 1)
        return logits + rearrange(bonus, "(b h w) c k -> b c h w k", b=x.shape[0], h=x.shape[2])

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logits = self.logits(params, x).float()  # (B, C, H, W, K)
        return -F.cross_entropy(rearrange(logits, "b c h w k -> b k c h w"), x, reduction="none")

    def next_log_probs(self, params, channel, pixel):
        logits = rearrange(params, "n (c k) -> n c k", c=self.channels)[:, channel].float()  # (N, K)
        if self.coupling is not None and channel > 0:
            logits = logits + self._coupling_bonus(pixel, channel)
        return F.log_softmax(logits, dim=-1)

"""The head interface: the likelihood of one pixel's symbols given backbone features.

A head turns ``params (B, P, H, W)`` (what the backbone outputs at each position) and
the symbols ``x (B, C, H, W)`` into per-symbol log-probabilities, and gives the exact
conditional of one symbol at one position (``next_log_probs``), which the sampling engine
draws from. When ``couple_channels`` is True the backbone saw only whole earlier pixels,
so the head itself makes channel c depend on channels < c of the same pixel; when False
the backbone already masked channel groups and params block c was computed from
channels < c.
"""

from __future__ import annotations


import torch
from torch import nn


class Head(nn.Module):
    """Base class of heads. Subclasses set ``num_params`` in ``__init__``."""

    num_params: int  # P, the number of backbone output channels this head reads

    def __init__(self, channels: int, num_symbols: int, couple_channels: bool):
        super().__init__()
        self.channels = channels  # C
        self.num_symbols = num_symbols  # K
        self.couple_channels = couple_channels

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """params (B, P, H, W), x long (B, C, H, W) in [0, K) -> log-probs (B, C, H, W), nats."""
        raise NotImplementedError

    def next_log_probs(self, params: torch.Tensor, channel: int, pixel: torch.Tensor) -> torch.Tensor:
        """The exact conditional of one symbol: params (N, P) at one position, the position's
        symbols so far ``pixel`` long (N, C) (channels < ``channel`` drawn) -> log p(x_channel = k
        | everything earlier) for every k, float32 (N, K). For a channel-masked backbone the
        params of channel c were computed after channels < c were drawn."""
        raise NotImplementedError

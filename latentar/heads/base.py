"""The head interface: the likelihood of one pixel's symbols given backbone features.

A head turns ``params (B, P, H, W)`` (what the backbone outputs at each position) and
the symbols ``x (B, C, H, W)`` into per-symbol log-probabilities, and samples a whole
pixel from one position's params. When ``couple_channels`` is True the backbone saw
only whole earlier pixels, so the head itself makes channel c depend on channels < c
of the same pixel; when False the backbone already masked channel groups and params
block c was computed from channels < c.
"""

from __future__ import annotations

import math
import numbers

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

    def sample(self, params: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
               generator: torch.Generator | None = None, channel: int | None = None) -> torch.Tensor:
        """params (B, P) at one position -> symbols long (B, C), channels drawn in order.

        With ``channel`` set (channel-masked backbones, where params block c was computed
        after channels < c were drawn) only that channel is drawn -> long (B,).
        """
        raise NotImplementedError


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """Scale logits (..., K) by 1/temperature and keep only the top_k largest (others -inf).

    Every sampler's draws pass here, so the knobs are checked here: temperature a finite
    number > 0, top_k None or an integer >= 1 (top_k >= K keeps every symbol).
    """
    if isinstance(temperature, bool) or not (isinstance(temperature, numbers.Real) and 0 < temperature < math.inf):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    logits = logits / temperature
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1 or None, got {top_k!r}")
        if top_k < logits.shape[-1]:
            kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
    return logits


def sample_logits(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Draw one index per row of logits (N, K) -> long (N,)."""
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

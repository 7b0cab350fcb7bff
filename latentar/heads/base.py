"""The head interface: the likelihood of one pixel's symbols given backbone features.

A head turns ``params (B, P, H, W)`` (what the backbone outputs at each position) and
the symbols ``x (B, C, H, W)`` into per-symbol log-probabilities, and gives the sampling
engine the exact conditional of one symbol. When ``couple_channels`` is True the backbone
saw only whole earlier pixels, so the head itself makes channel c depend on channels < c
of the same pixel; when False the backbone already masked channel groups and params
block c was computed from channels < c.

A head declares what it can model (``ordinal``, ``channel_blocks``, ``channel_counts``), and
``refusal`` says why it cannot model a given setting: every prior takes every registered head
that does not refuse its setting (``latentar.priors.base``), and the shared test suites run
every head through every prior that way. A new head is one file with a ``@register_head``
class, imported by ``latentar/heads/__init__.py``.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import torch
from torch import nn

from latentar.registry import HEADS


class Head(nn.Module):
    """Base class of heads. Subclasses set ``num_params`` in ``__init__``."""

    name: ClassVar[str]  # its registered name (``register_head``)
    # what it can model, checked by ``refusal`` before anything is built:
    ordinal: ClassVar[bool] = False  # True: ordinal symbols only (pixel levels), never codes
    channel_blocks: ClassVar[bool] = True  # params are C blocks, block c for channel c alone, so a
    #   channel-masked backbone may compute block c from channels < c; False: the head couples the
    #   channels of a pixel itself and needs whole-pixel params when C > 1
    channel_counts: ClassVar[tuple[int, ...] | None] = None  # the channel counts C it models; None: any

    num_params: int  # P, the number of backbone output channels this head reads

    def __init__(self, channels: int, num_symbols: int, couple_channels: bool):
        super().__init__()
        refusal = self.refusal(channels, couple_channels)
        if refusal is not None:
            raise ValueError(refusal)
        self.channels = channels  # C
        self.num_symbols = num_symbols  # K
        self.couple_channels = couple_channels

    @classmethod
    def refusal(cls, channels: int, couple_channels: bool, symbols: str = "pixels") -> str | None:
        """Why this head cannot model ``channels`` channels of ``symbols`` ("pixels" or "codes")
        behind a backbone that masks channel groups (``couple_channels`` False) or sees whole
        pixels (True); None when it can."""
        if cls.ordinal and symbols != "pixels":
            unordered = " or ".join(repr(name) for name in HEADS.names() if not HEADS.get(name).ordinal)
            return f"head {cls.name!r} models ordinal pixels; codes need {unordered}"
        if cls.channel_counts is not None and channels not in cls.channel_counts:
            counts = " or ".join(map(str, cls.channel_counts))
            return f"head {cls.name!r} models {counts} channels, got {channels}"
        if channels > 1 and not couple_channels and not cls.channel_blocks:
            return (f"head {cls.name!r} couples channels itself; a channel-masked backbone must use it "
                    f"with 1 channel, got {channels}")
        return None

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """params (B, P, H, W), x long (B, C, H, W) in [0, K) -> log-probs (B, C, H, W), nats."""
        raise NotImplementedError

    def next_log_probs(self, params: torch.Tensor, channel: int, pixel: torch.Tensor) -> torch.Tensor:
        """The exact conditional of one symbol: params (N, P) at one position, the position's
        symbols so far ``pixel`` long (N, C) (channels < ``channel`` drawn) -> log p(x_channel = k
        | everything earlier) for every k, float32 (N, K). For a channel-masked backbone the
        params of channel c were computed after channels < c were drawn."""
        raise NotImplementedError


def register_head(name: str) -> Callable[[type[Head]], type[Head]]:
    """Class decorator: register a Head subclass under ``name`` and set its ``name``."""

    def add(cls: type[Head]) -> type[Head]:
        cls.name = name
        return HEADS.register(name)(cls)

    return add

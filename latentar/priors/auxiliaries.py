"""The auxiliary variables a = f(x) of ``auxiliary`` priors (Kolesnikov & Lampert 2017), and which
values of x stay consistent with a given a.

- **pyramid**: a = x[:, :, ::2, ::2], the top-left pixel of every 2×2 block (shape
  (C, ⌈H/2⌉, ⌈W/2⌉)); given a, a symbol at a coarse position (even h and w) may take only a's
  value there, every other symbol any value.
- **grayscale**: a = ⌊L · Σ_c w_c x_c / (Σ_c w_c · K)⌋, one gray level in [0, L) per position,
  with the integer luma weights w = (299, 587, 114) of ITU-R BT.601 for RGB and w = (1,) for one
  channel (a = ⌊L·x/K⌋). Given the level g, channel c may take the values v for which some
  values of the later channels reach g: with S = Σ_{c'<c} w_c' x_c' + w_c·v and
  R = (K-1)·Σ_{c'>c} w_c', exactly those with ⌊L·S/(ΣwK)⌋ <= g <= ⌊L·(S+R)/(ΣwK)⌋. The reachable
  sums S..S+R step by at most max w < Σw <= Σw·K/L (one level's width, as L <= K), so no level
  between the two ends is skipped; the last channel's interval is the one value f(x) = g.

A ``Restriction`` gives, per symbol, the values allowed given the auxiliary: ``info`` (what a
says at each position, long (B or 1, H, W)) once, then ``allowed(info, pixel, channel)`` for any
set of positions; the scoring of ``auxiliary`` and the sampling engine (``Stepper.allowed``)
renormalise the detail stage's conditionals over it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from latentar.heads import Head

LUMA = (299, 587, 114)  # ITU-R BT.601 luma weights of R, G, B, per mille
PACKED_SLOTS = 4  # a 2×2 block of context symbols per coarse pixel of several channels


def luma_weights(channels: int) -> tuple[int, ...]:
    """The integer weights of f for C channels: (1,) for one, BT.601's for RGB."""
    if channels == 1:
        return (1,)
    if channels == len(LUMA):
        return LUMA
    raise ValueError(f"a grayscale auxiliary needs 1 or 3 channels (RGB), got {channels}")


def grayscale(x: torch.Tensor, num_symbols: int, levels: int) -> torch.Tensor:
    """x long (B, C, H, W) in [0, K) -> its gray levels long (B, 1, H, W) in [0, levels)."""
    weights = torch.tensor(luma_weights(x.shape[1]), device=x.device)
    total = (x.long() * weights[:, None, None]).sum(1, keepdim=True)  # (B, 1, H, W)
    return levels * total // (sum(luma_weights(x.shape[1])) * num_symbols)


def coarse(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) -> the next pyramid level (B, C, ⌈H/2⌉, ⌈W/2⌉)."""
    return x[:, :, ::2, ::2]


def coarse_shape(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    C, H, W = shape
    return C, -(-H // 2), -(-W // 2)


def coarse_mask(H: int, W: int, device: torch.device | str | None = None) -> torch.Tensor:
    """bool (H, W): True at the positions a pyramid level copies (even h and w)."""
    mask = torch.zeros(H, W, dtype=torch.bool, device=device)
    mask[::2, ::2] = True
    return mask


def coarse_context(a: torch.Tensor, num_symbols: int) -> torch.Tensor:
    """A coarse level a long (B, C, h, w) -> the detail stage's spatial context of single-channel
    symbols: a itself (B, h, w) for C = 1; for C > 1 every coarse pixel becomes a 2×2 block
    (B, 2h, 2w) holding c·K + a_c in slot c (row-major) and the pad symbol C·K in the unused slots,
    so no colour is lost and the symbols stay C·K + 1 rather than K^C."""
    B, C, h, w = a.shape
    if C == 1:
        return a[:, 0]
    offsets = num_symbols * torch.arange(C, device=a.device)[:, None, None]  # (C, 1, 1)
    pad = a.new_full((B, PACKED_SLOTS - C, h, w), C * num_symbols)
    slots = torch.cat([a + offsets, pad], dim=1)  # (B, 4, h, w)
    return rearrange(slots, "b (i j) h w -> b (h i) (w j)", i=2)


def context_spec(shape: tuple[int, int, int], num_symbols: int) -> tuple[int, tuple[int, int]]:
    """(context_symbols, context_shape) of ``coarse_context`` for a coarse level of ``shape``."""
    C, h, w = shape
    if C == 1:
        return num_symbols, (h, w)
    if C > PACKED_SLOTS:
        raise ValueError(f"a pyramid auxiliary packs at most {PACKED_SLOTS} channels into its context, got {C}")
    return C * num_symbols + 1, (2 * h, 2 * w)


@dataclass(frozen=True)
class PyramidRule:
    """A coarse position may take only a's value, which x already holds there."""

    num_symbols: int

    def info(self, context: torch.Tensor | None, shape: Sequence[int], device: torch.device) -> torch.Tensor:
        """-> long (1, H, W): 1 at the coarse positions."""
        return coarse_mask(shape[0], shape[1], device)[None].long()

    def log_probs(self, head: Head, params: torch.Tensor, x: torch.Tensor, info: torch.Tensor) -> torch.Tensor:
        """``restricted_log_probs`` in short: 0 (log 1) at the coarse positions, the head's own
        conditional elsewhere (every value allowed, nothing to renormalise)."""
        return torch.where(info[:, None].bool(), 0.0, head.log_prob(params, x))

    def allowed(self, info: torch.Tensor, pixel: torch.Tensor, channel: int) -> torch.Tensor:
        """info long (N,) or (1,), pixel long (N, C) -> bool (N, K)."""
        only = F.one_hot(pixel[:, channel], self.num_symbols).bool()  # (N, K)
        return torch.where(info[:, None].bool(), only, torch.ones_like(only))


@dataclass(frozen=True)
class GrayscaleRule:
    """Channel c may take the values from which the pixel can still reach its gray level."""

    num_symbols: int
    levels: int
    channels: int

    def info(self, context: torch.Tensor | None, shape: Sequence[int], device: torch.device) -> torch.Tensor:
        """-> long (B, H, W): the gray level of each position (the detail stage's context)."""
        assert context is not None  # the detail stage of a grayscale auxiliary is built with it
        return context

    def log_probs(self, head: Head, params: torch.Tensor, x: torch.Tensor, info: torch.Tensor) -> torch.Tensor:
        return restricted_log_probs(self, head, params, x, info)

    def allowed(self, info: torch.Tensor, pixel: torch.Tensor, channel: int) -> torch.Tensor:
        """info long (N,): gray levels, pixel long (N, C) (channels < ``channel`` drawn) -> bool (N, K)."""
        weights = luma_weights(self.channels)
        K, width = self.num_symbols, sum(weights) * self.num_symbols
        before = sum((weights[c] * pixel[:, c] for c in range(channel)), torch.zeros_like(info))  # (N,)
        low = before[:, None] + weights[channel] * torch.arange(K, device=pixel.device)  # (N, K)
        high = low + (K - 1) * sum(weights[channel + 1:])
        level = info[:, None]
        return (self.levels * low // width <= level) & (level <= self.levels * high // width)


Restriction = PyramidRule | GrayscaleRule


def restricted_log_probs(rule: Restriction, head: Head, params: torch.Tensor, x: torch.Tensor,
                         info: torch.Tensor) -> torch.Tensor:
    """The nats of each symbol of x long (B, C, H, W) under the head's conditional given params
    (B, P, H, W), renormalised over the values ``rule`` allows given ``info`` (B or 1, H, W):
    log p(x_c) - log Σ_{v allowed} p(v) -> (B, C, H, W). The head's per-value log-probabilities
    come from ``Head.next_log_probs``, so every head is renormalised alike."""
    B, C, H, W = x.shape
    flat = rearrange(params, "b p h w -> (b h w) p")
    pixel = rearrange(x, "b c h w -> (b h w) c")
    where = info.expand(B, H, W).reshape(-1)  # (N,)
    nats = []
    for channel in range(C):
        every = head.next_log_probs(flat, channel, pixel)  # (N, K)
        allowed = rule.allowed(where, pixel, channel)
        total = torch.logsumexp(every.masked_fill(~allowed, float("-inf")), dim=1)
        nats.append(every.gather(1, pixel[:, channel:channel + 1])[:, 0] - total)
    return rearrange(torch.stack(nats, 1), "(b h w) c -> b c h w", b=B, h=H, w=W)

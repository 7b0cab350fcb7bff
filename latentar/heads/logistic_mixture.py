"""Discretized mixture of logistics (Salimans et al. 2017, "PixelCNN++", section 2.1).

Symbol s of K sits at the centre v = 2s/(K-1) - 1 of a bin of half-width 1/(K-1) on
[-1, 1]; the edge bins s = 0 and s = K-1 extend to -inf and +inf, so the K bins cover
the real line and their probabilities sum to one exactly.

params layout at each position, with M = ``num_mixtures`` components and C channels::

    [ logits (M) | means (C·M) | log_scales (C·M) | coefficients (3·M, only C == 3 coupled) ]

so P = M·(1 + 2C) + 3M·[C == 3 and couple_channels]. Blocks of C·M are channel-major
(block c holds the M values of channel c). Behind a backbone that masks channel groups
(``couple_channels`` False) with C > 1, each channel is a one-channel mixture of its own, one
channel at a time: params are C blocks [ logits (M) | means (M) | log_scales (M) ], block c
computed from channels < c, so P = 3·M·C. With coupling, component m shifts the means
of later channels by the earlier channels' discretized values (tanh-squashed
coefficients α, β, γ): μ_g += α·v_r, μ_b += β·v_r + γ·v_g. One mixture indicator is
shared by all channels of a pixel, so

    p(x) = Σ_m π_m Π_c p_c(x_c | m, x_<c),

and ``log_prob`` returns the exact per-channel conditionals log p(x_c | x_<c) whose sum
over c is log p(x).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

from latentar.checks import check_value
from latentar.heads.base import Head, register_head

LOG_SCALE_MIN = -7.0  # scale >= e^-7 ≈ 9e-4: keeps 1/scale finite; 8-bit bins are 2/255 ≈ 8e-3 wide
TINY_BIN = 1e-5  # standardized bin widths below this use the midpoint rule (relative error < 1e-11)
COUPLED = 3  # coefficients per component with RGB coupling: α (g←r), β (b←r), γ (b←g)


def discretized_logistic_log_prob(symbols: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                                  num_symbols: int) -> torch.Tensor:
    """log P(bin ``symbols``) under Logistic(mean, e^log_scale), all arguments broadcast.

    symbols long in [0, K); mean and log_scale float on the [-1, 1] scale. Every branch
    is evaluated on clamped, finite inputs, so gradients through ``torch.where`` stay finite.
    """
    K = num_symbols
    half = 1.0 / (K - 1)  # bin half-width
    log_scale = log_scale.clamp(min=LOG_SCALE_MIN)
    inv_scale = torch.exp(-log_scale)
    centred = symbols.to(mean.dtype) * (2 * half) - 1.0 - mean
    upper = inv_scale * (centred + half)  # standardized upper edge a
    lower = inv_scale * (centred - half)  # standardized lower edge b < a
    # σ(a) - σ(b) = σ(a)·(1 - σ(b))·(1 - e^(b-a)): no cancellation in either tail.
    width = (2 * half) * inv_scale  # a - b > 0
    interior = (F.logsigmoid(upper) - F.softplus(lower)
                + torch.log(-torch.expm1(-width.clamp(min=TINY_BIN))))
    # Tiny bins: density at the centre times the bin width, in logs, with no exp to underflow.
    mid = inv_scale * centred
    midpoint = mid - 2 * F.softplus(mid) - log_scale + math.log(2 * half)
    middle = torch.where(width < TINY_BIN, midpoint, interior)
    first = F.logsigmoid(upper)  # P(v < upper edge) for s = 0
    last = -F.softplus(lower)  # P(v > lower edge) = 1 - σ(b) for s = K-1
    return torch.where(symbols == 0, first, torch.where(symbols == K - 1, last, middle))


def every_bin_log_prob(mean: torch.Tensor, log_scale: torch.Tensor, num_symbols: int) -> torch.Tensor:
    """log P(bin s) for every s in [0, K) under Logistic(mean, e^log_scale): mean and
    log_scale (...) -> (..., K); the same values as ``discretized_logistic_log_prob`` at each s.

    Bin s spans edges s-1 and s of the K-1 inner edges, so the two log-sigmoids are taken
    once per edge and shared by the bins on either side.
    """
    K = num_symbols
    half = 1.0 / (K - 1)
    log_scale = log_scale.clamp(min=LOG_SCALE_MIN)[..., None]
    inv_scale = torch.exp(-log_scale)  # (..., 1)
    edges = torch.arange(K - 1, device=mean.device, dtype=mean.dtype) * (2 * half) - 1.0 + half  # (K-1,)
    standardized = inv_scale * (edges - mean[..., None])  # (..., K-1)
    below = F.logsigmoid(standardized)  # log P(v < edge)
    above = -F.softplus(standardized)  # log P(v > edge)
    width = (2 * half) * inv_scale  # (..., 1)
    interior = below[..., 1:] + above[..., :-1] + torch.log(-torch.expm1(-width.clamp(min=TINY_BIN)))
    if bool((width < TINY_BIN).any()):  # very wide logistics: the midpoint rule, as for one symbol
        centres = torch.arange(1, K - 1, device=mean.device, dtype=mean.dtype) * (2 * half) - 1.0
        mid = inv_scale * (centres - mean[..., None])
        midpoint = mid - 2 * F.softplus(mid) - log_scale + math.log(2 * half)
        interior = torch.where(width < TINY_BIN, midpoint, interior)
    return torch.cat([below[..., :1], interior, above[..., -1:]], dim=-1)


@register_head("logistic_mixture")
class LogisticMixtureHead(Head):
    """Mixture of ``num_mixtures`` discretized logistics per position; see the module doc.

    ``next_log_probs`` gives the sampling engine the exact conditional of one channel,
    marginalised over the mixture component, so every sampling knob treats it like any head.
    """

    ordinal = True  # bins on the real line: pixel levels, not codes
    channel_blocks = True  # whole pixels: one mixture indicator shared by the channels of a pixel;
    #                        behind a channel-masked backbone: a mixture per channel, block c
    channel_counts = (1, 3)  # one channel, or RGB with its linear coupling of means

    def __init__(self, channels: int, num_symbols: int, couple_channels: bool, num_mixtures: int = 10):
        super().__init__(channels, num_symbols, couple_channels)
        num_mixtures = check_value(num_mixtures, int, "logistic_mixture.num_mixtures")
        self.num_mixtures = num_mixtures  # M
        self.per_channel = channels > 1 and not couple_channels  # a mixture of its own per channel
        self.coupled = channels == 3 and couple_channels
        mixture_params = 3 * channels if self.per_channel else 1 + 2 * channels + (COUPLED if self.coupled else 0)
        self.num_params = num_mixtures * mixture_params

    def split(self, params: torch.Tensor, channels: int | None = None):
        """params (N, P, ...) of ``channels`` (None: the head's C) mixed channels -> logits
        (N, M, ...), means and log_scales (N, C, M, ...), coefficients tanh-squashed (N, 3, M, ...)
        or None."""
        M, C = self.num_mixtures, self.channels if channels is None else channels
        sizes = [M, C * M, C * M] + ([COUPLED * M] if self.coupled and C == 3 else [])
        if params.shape[1] != sum(sizes):
            raise ValueError(f"params must have {sum(sizes)} channels, got {params.shape[1]}")
        parts = params.split(sizes, dim=1)
        means, log_scales = (p.unflatten(1, (C, M)) for p in parts[1:3])
        coeffs = torch.tanh(parts[3].unflatten(1, (COUPLED, M))) if len(parts) > 3 else None
        return parts[0], means, log_scales, coeffs

    @staticmethod
    def coupled_mean(means: torch.Tensor, coeffs: torch.Tensor | None, v: torch.Tensor,
                     c: int) -> torch.Tensor:
        """Channel c's means (N, M, ...) shifted by earlier channels' values v (N, C, 1, ...)."""
        mean = means[:, c]
        if coeffs is not None and c == 1:
            mean = mean + coeffs[:, 0] * v[:, 0]  # g ← α·r
        if coeffs is not None and c == 2:
            mean = mean + coeffs[:, 1] * v[:, 0] + coeffs[:, 2] * v[:, 1]  # b ← β·r + γ·g
        return mean

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not params.is_floating_point() or params.dtype in (torch.float16, torch.bfloat16):
            params = params.float()
        if self.per_channel:  # C one-channel mixtures: the channels folded into the width
            C = self.channels
            out = self.mixture_log_prob(rearrange(params, "b (c p) h w -> b p h (w c)", c=C),
                                        rearrange(x, "b c h w -> b 1 h (w c)"), 1)
            return rearrange(out, "b 1 h (w c) -> b c h w", c=C)
        return self.mixture_log_prob(params, x, self.channels)

    def mixture_log_prob(self, params: torch.Tensor, x: torch.Tensor, channels: int) -> torch.Tensor:
        """``log_prob`` of one mixture over ``channels`` channels: params (B, P, H, W) float,
        x (B, channels, H, W) -> (B, channels, H, W)."""
        logits, means, log_scales, coeffs = self.split(params, channels)  # (B, M, H, W), (B, C, M, H, W), ...
        x = x.long()
        v = (x.to(params.dtype) * (2.0 / (self.num_symbols - 1)) - 1.0)[:, :, None]  # (B, C, 1, H, W)
        joint = F.log_softmax(logits, dim=1)  # log π_m, then + log p_c for each channel c
        before = torch.zeros_like(joint[:, 0])  # log p(x_<c) = 0 for c = 0, (B, H, W)
        out = []
        for c in range(channels):
            mean = self.coupled_mean(means, coeffs, v, c)  # (B, M, H, W)
            joint = joint + discretized_logistic_log_prob(x[:, c:c + 1], mean, log_scales[:, c],
                                                          self.num_symbols)
            upto = torch.logsumexp(joint, dim=1)  # log p(x_<=c), (B, H, W)
            out.append(upto - before)  # log p(x_c | x_<c)
            before = upto
        return torch.stack(out, dim=1)  # (B, C, H, W)

    def next_log_probs(self, params, channel, pixel):
        """Exact p(x_c | x_<c) of one pixel, marginalised over the shared mixture component:
        Σ_m w_m(x_<c) p_c(x_c | m, x_<c), with w_m(x_<c) ∝ π_m Π_{c' < c} p_c'(x_c' | m, x_<c');
        with a mixture per channel (``per_channel``), channel c's own, from its block of params."""
        if self.per_channel:
            block = params.unflatten(1, (self.channels, -1))[:, channel]  # (N, 3M)
            channel, pixel = 0, pixel[:, channel:channel + 1]
            logits, means, log_scales, coeffs = self.split(block.float(), 1)  # (N, M), (N, 1, M), None
        else:
            logits, means, log_scales, coeffs = self.split(params.float())  # (N, M), (N, C, M), ...
        K = self.num_symbols
        v = (pixel.float() * (2.0 / (K - 1)) - 1.0)[:, :, None]  # (N, C, 1) values of drawn channels
        weights = F.log_softmax(logits, dim=1)  # (N, M): log π_m, then the posterior given x_<c
        for c in range(channel):
            weights = weights + discretized_logistic_log_prob(
                pixel[:, c:c + 1], self.coupled_mean(means, coeffs, v, c), log_scales[:, c], K)
        weights = F.log_softmax(weights, dim=1)
        mean = self.coupled_mean(means, coeffs, v, channel)  # (N, M)
        bins = every_bin_log_prob(mean, log_scales[:, channel], K)  # (N, M, K)
        return torch.logsumexp(bins + weights[:, :, None], dim=1)  # (N, K)

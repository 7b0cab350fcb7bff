"""Gated units and the gated vertical/horizontal layer of Gated PixelCNN.

Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders") replaces ReLUs by ``tanh(a) · σ(b)`` and splits the network into two stacks:

- the *vertical* stack sees every row above the current one: each layer is a
  (k//2+1)×k down-shifted convolution over rows h-k//2 .. h of its input, and the
  first one is shifted down one more row, so row h of every vertical layer depends on
  image rows < h only (the down-shift that the paper applies before the
  vertical-to-horizontal link happens once, at the input, so no vertical feature ever
  sees its own row and the link needs no shift);
- the *horizontal* stack sees the current row up to the current pixel: a 1×k
  convolution masked like ``MaskedConv2d`` (taps left of the centre see all channel
  groups; the centre tap sees groups < g with mask A, <= g with mask B), plus a 1×1
  link from the vertical stack, a residual connection and a skip output.

Together the two stacks cover every earlier pixel: no blind spot.

The layer is written once for whole maps (training) and for the one row / position
that an incremental generation step computes: its spatial convolutions go through a
pass ``run`` of ``latentar.nn.passes``.
"""

from __future__ import annotations

import torch
from torch import nn

from latentar.nn.conditioning import conditioned
from latentar.nn.masked import MaskedConv2d
from latentar.nn.shifted import down_shifted_conv


def gate_tanh_sigmoid(x: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """(B, 2p, H, W) -> (B, p, H, W): ``tanh(a) · σ(b)``.

    The 2p channels form ``groups`` contiguous blocks (channel group g of a masked
    layer); each block holds its q = p/groups ``a`` channels, then its q ``b`` channels,
    so output channel block g still depends only on what input group g may see.
    """
    # unflatten, not an einops pattern: this runs at every generation step
    halves = x.unflatten(1, (groups, 2, -1))  # (B, g, 2, q, H, W)
    a, b = halves[:, :, 0].flatten(1, 2), halves[:, :, 1].flatten(1, 2)  # (B, p, H, W) each
    return torch.tanh(a) * torch.sigmoid(b)


class GatedStackLayer(nn.Module):
    """One layer of both stacks: (v, h) -> (v', h', skip).

    v: (B, c, ·, W) vertical features, h: (B, c, ·, ·) horizontal features (channel
    groups R→G→B); outputs v' and h' with ``hidden`` channels and a skip of ``hidden``
    channels. ``first`` marks the layer that reads the image: its vertical convolution
    is shifted down one row, its horizontal one uses mask A, and it has no residual
    connection (the widths differ).

    ``run`` (``latentar.nn.passes``) applies the two spatial convolutions: to whole
    maps (``FullPass``), or to one row (vertical) / one position (horizontal) of a
    generation step (``StepPass``); everything else is pointwise. The first layer's
    convolutions read the image z itself (``run.conv_input``), which a generation keeps
    complete up to the current symbol, so they cache nothing.
    """

    def __init__(self, in_channels: int, hidden: int, kernel: int, groups: int, first: bool):
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"gated layers need an odd kernel size, got {kernel}")
        self.groups, self.first = groups, first
        self.vconv = down_shifted_conv(in_channels, 2 * hidden, (kernel // 2 + 1, kernel), shift=first)
        self.link = nn.Conv2d(2 * hidden, 2 * hidden, 1)  # vertical -> horizontal, no mask needed
        self.hconv = MaskedConv2d(in_channels, 2 * hidden, (1, kernel), "A" if first else "B", groups)
        self.residual = None if first else MaskedConv2d(hidden, hidden, 1, "B", groups)
        self.skip = MaskedConv2d(hidden, hidden, 1, "B", groups)

    def spatial(self, run, conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The first layer's convs read the whole image z (B, C·E, H, W); the others a feature map."""
        return run.conv_input(conv, x) if self.first else run.conv(conv, x)

    def vertical(self, run, v: torch.Tensor, bias: torch.Tensor | None, context: torch.Tensor | None = None):
        """v (B, c, R, W) -> (v' (B, p, R, W), link (B, 2p, R, W)); R is H for a whole map,
        1 in a row step (the first layer takes the whole image z). The gate adds a class bias
        (B, 2p) and a context bias map (B, 2p, H, W) where given (``conditioning.conditioned``)."""
        pre = self.spatial(run, self.vconv, v)
        link = run.pointwise(self.link, pre)
        return gate_tanh_sigmoid(conditioned(run, pre, bias, context)), link

    def horizontal(self, run, h: torch.Tensor, link: torch.Tensor, bias: torch.Tensor | None,
                   context: torch.Tensor | None = None):
        """h (B, c, R, S), link (B, 2p, R, S) -> (h' (B, p, R, S), skip (B, p, R, S)); the first
        layer takes the whole image z as h. Class bias and context map as in ``vertical``."""
        pre = conditioned(run, self.spatial(run, self.hconv, h) + link, bias, context)  # (B, 2p, R, S)
        gated = gate_tanh_sigmoid(pre, self.groups)  # (B, p, R, S)
        out = gated if self.residual is None else h + run.pointwise(self.residual, gated)
        return out, run.pointwise(self.skip, gated)

"""The wiring shared by the PixelRNN priors (``row_lstm``, ``diagonal_bilstm``).

Not a prior itself: a base class whose subclasses build ``self.body``, a
``latentar.nn.lstm.RecurrentStack`` of their own LSTM layers, and explain in their
docstrings how their layers evaluate one position at a time; and ``RecurrentStepper``,
the exact incremental sampler of both.
"""

from __future__ import annotations

import torch

from latentar.nn.lstm import RecurrentStack
from latentar.priors.base import Prior
from latentar.priors.condition import Condition
from latentar.priors.layer_cache import LayerCacheStepper


class RecurrentStepper(LayerCacheStepper):
    """Generation through a ``RecurrentStack``, one position at a time, channel-masked.

    ``params(h, w, c)`` evaluates the stack at (h, w) from the network input there (channels
    < c drawn) and the layers' cached states of earlier positions. The states the call for
    the last channel stores at (h, w) are final: every channel group g of every layer sees
    channels < g of its own pixel only (the mask-A input conv, then mask-B convs and
    elementwise cell updates), and those are drawn by then. So ``take(h, w)`` only enters
    the pixel into the network input, and after the last column lets every layer finish
    the row: a pixel costs C one-position passes through the layers.
    """

    prior: RecurrentPrior

    def __init__(self, prior: RecurrentPrior, x: torch.Tensor, cond: Condition, order: torch.Tensor | None):
        super().__init__(prior, x, cond, order)
        self.caches = prior.body.new_caches(cond.labels, cond.augment, x.shape[0], (x.shape[-2], x.shape[-1]),
                                            x.device)
        self.row = -1  # the row begun last

    def params(self, h: int, w: int, c: int | None) -> torch.Tensor:
        if h != self.row:  # (h, 0): the rows above are final
            self.prior.body.begin_row(self.caches, h)
            self.row = h
        return self.prior.body.evaluate_at(self.caches, self.step(h, w, c), self.z, h, w)  # (n, P)

    def take(self, h: int, w: int) -> None:
        super().take(h, w)
        if w == self.x.shape[-1] - 1:
            self.prior.body.end_row(self.caches, h, self.z[:, :, h])


class RecurrentPrior(Prior):
    """A Prior whose backbone is a ``RecurrentStack`` with channel-masked LSTM layers."""

    channel_masked = True
    Stepper = RecurrentStepper
    body: RecurrentStack

    def network(self, z, cond):
        return self.body(z, cond.labels, cond.augment)  # (B, P, H, W)

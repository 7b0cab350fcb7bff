"""The wiring shared by the PixelRNN priors (``row_lstm``, ``diagonal_bilstm``).

Not a prior itself: a base class whose subclasses build ``self.body``, a
``latentar.nn.lstm.RecurrentStack`` of their own LSTM layers, and explain in their
docstrings how their layers evaluate one position at a time; and ``RecurrentStepper``,
the exact incremental sampler of both.
"""

from __future__ import annotations

import torch

from latentar.nn.incremental import PaddedMap, conv_parts, conv_window
from latentar.nn.lstm import RecurrentStack, pointwise
from latentar.priors.base import Prior
from latentar.priors.engine import Stepper


class RecurrentStepper(Stepper):
    """Generation through a ``RecurrentStack``, one position at a time, channel-masked.

    ``params(h, w, c)`` evaluates the stack at (h, w) from the symbols x holds there
    (channels < c drawn) and the layers' cached states of earlier positions; ``take(h, w)``
    evaluates it once more with the whole pixel, so the states stored for (h, w) are the
    ones every later position reads, and after the last column finishes the row. So a
    pixel costs C + 1 one-position passes through the layers.
    """

    def __init__(self, prior: RecurrentPrior, x: torch.Tensor, labels: torch.Tensor | None,
                 context: torch.Tensor | None):
        super().__init__(prior, x, labels, context)
        n, _, H, W = x.shape
        body = self.body = prior.body
        self.first = conv_parts(body.first)
        self.inputs = PaddedMap(n, body.first.in_channels, (H, W), self.first.pad, body.first.weight)
        self.biases = body.biases(labels, n, x.device)  # each layer's (n, bias_size)
        self.caches = [layer.new_cache(n, H, W, x.device) for layer in body.layers]
        self.row = -1  # the row begun last

    def params(self, h: int, w: int, c: int | None) -> torch.Tensor:
        if h != self.row:  # (h, 0): the rows above are final
            for layer, cache in zip(self.body.layers, self.caches):
                layer.begin_row(cache, h)
            self.row = h
        return pointwise(self.body.out, self.evaluate_at(h, w))  # (n, P)

    def take(self, h: int, w: int) -> None:
        self.evaluate_at(h, w)
        if w == self.x.shape[-1] - 1:
            for layer, cache, bias in zip(self.body.layers, self.caches, self.biases):
                layer.end_row(cache, h, bias)

    def evaluate_at(self, h: int, w: int) -> torch.Tensor:
        """The last layer's features (n, F) at (h, w) from x there; stores every layer's states."""
        z = self.prior.input(self.x[:, :, h:h + 1, w:w + 1])  # (n, C·E, 1, 1)
        self.inputs.write(z, h, w)
        a = conv_window(self.first, self.inputs.data, h, w).flatten(1)  # (n, F)
        for layer, cache, bias in zip(self.body.layers, self.caches, self.biases):
            a = layer.evaluate_at(cache, h, w, a, z.flatten(1), bias)  # (n, F)
        return a


class RecurrentPrior(Prior):
    """A Prior whose backbone is a ``RecurrentStack`` with channel-masked LSTM layers."""

    heads = ("categorical", "logistic_mixture")
    channel_masked = True
    Stepper = RecurrentStepper
    body: RecurrentStack

    def network(self, z, labels, context):
        return self.body(z, labels)  # (B, P, H, W)

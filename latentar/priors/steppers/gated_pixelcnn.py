"""Gated PixelCNN's fast stepper: the vertical stack once per row, the horizontal stack
at the current position only, once per channel."""

from __future__ import annotations

import torch

from latentar.nn.incremental import as_matrix
from latentar.priors.steppers.cached import LayerCacheStepper


class GatedPixelCNNStepper(LayerCacheStepper):
    """At the first channel of a row's first position the vertical stack runs over that row
    (every row above is final then); ``params(h, w, c)`` runs the horizontal stack at (h, w)."""

    def __init__(self, prior, x, labels, context):
        super().__init__(prior, x, labels, context)
        self.biases = prior.biases(labels)

    def params(self, h: int, w: int, c: int | None) -> torch.Tensor:
        if w == 0 and not c:
            self.prior.vertical_stack(self.step(h), self.z, self.biases)
        return as_matrix(self.prior.horizontal_stack(self.step(h, w, c), self.z, self.biases))  # (n, P)

"""PixelCNN's fast stepper: every layer at the current position only, once per channel."""

from __future__ import annotations

import torch

from latentar.nn.incremental import as_matrix
from latentar.priors.steppers.cached import LayerCacheStepper


class PixelCNNStepper(LayerCacheStepper):
    """``params(h, w, c)`` runs ``PixelCNN.body`` at (h, w) from the cached input maps of
    every layer; channel c's block of params sees the channels < c drawn at (h, w)."""

    def __init__(self, prior, x, labels, context):
        super().__init__(prior, x, labels, context)
        self.biases = prior.biases(labels)

    def params(self, h: int, w: int, c: int | None) -> torch.Tensor:
        return as_matrix(self.prior.body(self.step(h, w, c), self.z, self.biases))  # (n, P)

"""PixelSNAIL's fast stepper: every layer at the current position only, attention from a
KV cache of the earlier positions."""

from __future__ import annotations

import torch

from latentar.nn.incremental import as_matrix
from latentar.priors.steppers.cached import LayerCacheStepper


class PixelSNAILStepper(LayerCacheStepper):
    """``params(h, w, None)`` runs ``PixelSNAIL.body`` at (h, w); ``take`` stores the keys
    and values of (h, w), which see its drawn symbols (``StepCache.take``)."""

    def __init__(self, prior, x, labels, context):
        super().__init__(prior, x, labels, context)
        self.z = prior.with_background(self.z)  # (n, C·E + 2, H, W)
        self.ctx = prior.context_features(context, tuple(x.shape[-2:]))  # (n, F_c, H, W) or None
        self.biases = prior.biases(labels)

    def params(self, h: int, w: int, c: int | None) -> torch.Tensor:
        return as_matrix(self.prior.body(self.step(h, w), self.z, self.ctx, self.biases))  # (n, P)

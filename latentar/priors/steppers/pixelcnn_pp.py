"""PixelCNN++'s fast stepper: the u stream once per row, the ul stream once per position."""

from __future__ import annotations

import torch

from latentar.nn.incremental import as_matrix
from latentar.priors.steppers.cached import LayerCacheStepper


class PixelCNNppStepper(LayerCacheStepper):
    """At a row's first position the u stream (rows above only) runs over that row;
    ``params(h, w, None)`` runs the ul stream at (h, w). Each level of the up/down passes
    is computed only at the positions attached to it."""

    def __init__(self, prior, x, labels, context):
        super().__init__(prior, x, labels, context, sizes=prior.sizes)
        self.z = prior.with_ones(self.z)  # (n, C·E + 1, H, W)
        self.biases = prior.biases(labels)

    def params(self, h: int, w: int, c: int | None) -> torch.Tensor:
        if w == 0:
            self.prior.u_stream(self.step(h), self.z, self.biases)
        return as_matrix(self.prior.ul_stream(self.step(h, w), self.z, self.biases))  # (n, P)

"""The base of the steppers that evaluate a network body through ``StepPass``es."""

from __future__ import annotations

import torch

from latentar.nn.incremental import StepCache, StepPass
from latentar.priors.engine import Stepper


class LayerCacheStepper(Stepper):
    """A stepper whose prior's body runs one row or one position at a time over one
    ``StepCache`` (``latentar.nn.incremental``).

    ``self.z`` is the network input of x (n, C·E, H, W), kept equal to ``prior.input(x)``
    wherever x is drawn (subclasses may append constant channels to it); ``sizes`` are
    the (H, W) of each level of the body (default: one level, the grid).
    """

    def __init__(self, prior, x: torch.Tensor, labels: torch.Tensor | None, context: torch.Tensor | None,
                 sizes: list[tuple[int, int]] | None = None):
        super().__init__(prior, x, labels, context)
        self.cache = StepCache(x.shape[0], sizes or [tuple(x.shape[-2:])])
        self.z = prior.input(x)  # (n, C·E, H, W)
        self.symbol_channels = self.z.shape[1]

    def step(self, h: int, w: int | None = None, c: int | None = None) -> StepPass:
        """The pass of row h (w None) or of position (h, w); for channel c > 0 of a
        channel-masked prior the drawn channels < c of (h, w) enter z first."""
        if c:
            self.embed(h, w)
        return StepPass(self.cache, h, w)

    def embed(self, h: int, w: int) -> None:
        """z at (h, w) from the symbols x holds there."""
        self.z[:, :self.symbol_channels, h, w] = self.prior.input(self.x[:, :, h:h + 1, w:w + 1])[:, :, 0, 0]

    def take(self, h: int, w: int) -> None:
        self.embed(h, w)
        self.cache.take(h, w)

"""Priors whose network is written once for whole maps and for generation steps, through a
pass ``run`` (``latentar.nn.passes``), and the stepper that evaluates them from layer caches.

A ``PassPrior`` writes its network in two parts, each once for both kinds of pass:

- ``rows_above(run, z, given)``: the part that reads only the rows above the current one
  (by default nothing): a generation runs it on a whole row, at the row's first position,
  before its first channel (every row above is final then);
- ``at_position(run, z, given) -> params``: the rest; a generation runs it at one position
  (once per channel of a channel-masked prior, the drawn channels < c entered first);

where z is ``network_input(prior.input(x))`` (the embedded symbols, plus constant channels a
network appends), ``given = given(cond, (H, W))`` is what the condition gives every pass and
what a generation holds fixed (class biases, context features), and ``levels()`` are the
(H, W) of every resolution the network computes at. ``network`` chains them over whole maps;
``PassStepper``, the fast stepper of every ``PassPrior``, chains them over rows and positions.

``LayerCacheStepper`` is what ``PassStepper`` shares with ``RecurrentStepper``: a ``StepCache``
and the network input z, kept equal to ``prior.input(x)`` wherever x is drawn.
"""

from __future__ import annotations

from typing import Any

import torch

from latentar.nn.caches import StepCache
from latentar.nn.passes import FullPass, StepPass
from latentar.nn.windows import as_matrix
from latentar.priors.base import Prior
from latentar.priors.condition import Condition
from latentar.priors.engine import Stepper


class PassPrior(Prior):
    """A prior whose ``network`` is ``rows_above`` then ``at_position`` (the module docstring)."""

    def levels(self) -> list[tuple[int, int]]:
        """(H, W) of each resolution of the network, the grid first."""
        return [(self.spec.shape[1], self.spec.shape[2])]

    def network_input(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, C·E, H, W) -> the network's input (B, C·E + extra, H, W); by default z itself."""
        return z

    def given(self, cond: Condition, size: tuple[int, int]) -> Any:
        """What every pass reads of ``cond`` for a grid of ``size`` (H, W)."""
        raise NotImplementedError

    def rows_above(self, run, z: torch.Tensor, given: Any) -> None:
        """The part of the network that reads only rows above (a whole row in a step pass)."""

    def at_position(self, run, z: torch.Tensor, given: Any) -> torch.Tensor:
        """The rest -> params (B, P, H, W), or (B, P, 1, 1) at one position of a step pass."""
        raise NotImplementedError

    def network(self, z, cond):
        z = self.network_input(z)
        given = self.given(cond, tuple(z.shape[-2:]))
        run = FullPass(self.levels())
        self.rows_above(run, z, given)
        return self.at_position(run, z, given)


class LayerCacheStepper(Stepper):
    """A stepper whose prior's network runs one row or one position at a time over one
    ``StepCache``. ``self.z`` is the network input of x (n, C·E, H, W), kept equal to
    ``prior.input(x)`` wherever x is drawn (its first ``symbol_channels``; constant channels
    may follow); ``levels`` are the (H, W) of each resolution (default: one, the grid)."""

    def __init__(self, prior: Prior, x: torch.Tensor, cond: Condition, order: torch.Tensor | None,
                 levels: list[tuple[int, int]] | None = None):
        super().__init__(prior, x, cond, order)
        self.cache = StepCache(x.shape[0], levels or [(x.shape[-2], x.shape[-1])])
        self.z = prior.input(x)  # (n, C·E, H, W)
        self.symbol_channels = self.z.shape[1]

    def step(self, h: int, w: int | None = None, c: int | None = None) -> StepPass:
        """The pass of row h (w None) or of position (h, w); for channel c > 0 of a
        channel-masked prior the drawn channels < c of (h, w) enter z first."""
        if c:
            assert w is not None  # channels > 0 are drawn at a position
            self.embed(h, w)
        return StepPass(self.cache, h, w)

    def embed(self, h: int, w: int) -> None:
        """z at (h, w) from the symbols x holds there."""
        self.z[:, :self.symbol_channels, h, w] = self.prior.input(self.x[:, :, h:h + 1, w:w + 1])[:, :, 0, 0]

    def take(self, h: int, w: int) -> None:
        self.embed(h, w)
        self.cache.take(h, w)


class PassStepper(LayerCacheStepper):
    """The fast stepper of a ``PassPrior``: ``rows_above`` once per row, at its first position
    before the first channel; ``at_position`` at every call of ``params(h, w, c)``. Convs read
    cached input maps, attention the cached keys and values of earlier positions, which
    ``take`` stores once a position is drawn (``StepCache.take``)."""

    prior: PassPrior

    def __init__(self, prior: PassPrior, x: torch.Tensor, cond: Condition, order: torch.Tensor | None):
        super().__init__(prior, x, cond, order, prior.levels())
        self.z = prior.network_input(self.z)  # (n, C·E + extra, H, W)
        self.given = prior.given(cond, (x.shape[-2], x.shape[-1]))

    def params(self, h: int, w: int, c: int | None) -> torch.Tensor:
        if w == 0 and not c:
            self.prior.rows_above(self.step(h), self.z, self.given)
        return as_matrix(self.prior.at_position(self.step(h, w, c), self.z, self.given))  # (n, P)

"""The wiring shared by the PixelRNN priors (``row_lstm``, ``diagonal_bilstm``).

Not a prior itself: a base class whose subclasses build ``self.body``, a
``latentar.nn.lstm.RecurrentStack`` of their own LSTM layers, and explain in their
docstrings how their layers generate incrementally.
"""

from __future__ import annotations

import torch

from latentar.nn.incremental import incremental_sampler
from latentar.nn.lstm import RecurrentStack
from latentar.priors.base import Prior, eval_mode


class RecurrentPrior(Prior):
    """A Prior whose backbone is a ``RecurrentStack`` with channel-masked LSTM layers."""

    heads = ("categorical", "logistic_mixture")
    channel_masked = True
    body: RecurrentStack

    def network(self, z, labels, context):
        return self.body(z, labels)  # (B, P, H, W)

    @incremental_sampler
    def sample(self, n: int, cond=None, *, temperature: float = 1.0, top_k: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact incremental generation -> long (n, C, H, W); draws match ``naive_sample``
        exactly for the same generator (see the subclass for the scheme and its cost)."""
        labels = self.blank_grids(n, cond)[1].labels
        draw = dict(temperature=temperature, top_k=top_k, generator=generator)
        with eval_mode(self):
            return self.body.sample(self.input, self.head, n, self.spec.shape, labels, draw)

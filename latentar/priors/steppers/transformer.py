"""The Transformer's fast stepper: every block at the current position only, attention over
a KV cache of the earlier positions."""

from __future__ import annotations

import torch

from latentar.nn.incremental import StepCache, StepPass
from latentar.priors.engine import Stepper


class TransformerStepper(Stepper):
    """``params(h, w, None)`` runs ``Transformer.body`` on slot i = h·W + w alone: its input
    is the start token (i = 0) or the symbols of position i - 1, final by then, plus its
    position terms; each block's key and value of slot i enter the ``StepCache``, and its
    query attends to slots <= i there."""

    def __init__(self, prior, x, labels, context):
        super().__init__(prior, x, labels, context)
        self.cache = StepCache(x.shape[0], [tuple(x.shape[-2:])])
        self.start = prior.start_token(labels, x.shape[0])  # (n, 1, D)
        self.terms = prior.position_terms(context)  # (1 or n, H·W, D), computed once
        self.biases = prior.biases(labels)

    def params(self, h: int, w: int, c: int | None) -> torch.Tensor:
        W = self.x.shape[-1]
        i = h * W + w
        if i == 0:
            slot = self.start
        else:
            ph, pw = divmod(i - 1, W)
            slot = self.prior.embed_symbols(self.prior.input(self.x[:, :, ph:ph + 1, pw:pw + 1]))  # (n, 1, D)
        slot = slot + self.terms[:, i:i + 1]
        return self.prior.body(StepPass(self.cache, h, w), slot, self.biases)[:, 0]  # (n, P)

"""EMA weights: a copy of the model that follows ema <- decay*ema + (1 - decay)*param."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """A copy of ``model`` whose parameters follow ema ← decay·ema + (1 - decay)·param."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)


@torch.no_grad()
def update_ema(ema: AveragedModel, model: nn.Module) -> None:
    """One EMA step after an update (the first one copies). Buffers (masks, codebooks,
    counters) are state rather than weights: the EMA copy takes the model's current ones."""
    ema.update_parameters(model)
    for mine, theirs in zip(ema.module.buffers(), model.buffers()):
        mine.copy_(theirs)

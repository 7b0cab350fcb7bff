"""Learning-rate schedules, stepped once per optimizer update (never per epoch).

``lr_factor(...)(k)`` is the multiplier of the base learning rate for update k = 0, 1, ...:
a linear warm-up ``(k + 1) / warmup_steps`` for k < warmup_steps, then, with
t = k - warmup_steps,

    constant      1
    exponential   lr_decay ** t                       (PixelCNN++ decays per step)
    cosine        (1 + cos(pi · t / (steps - warmup_steps))) / 2
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

from latentar.training.config import LR_SCHEDULES, TrainConfig


def lr_factor(schedule: str, *, steps: int, warmup_steps: int = 0, lr_decay: float = 1.0) -> Callable[[int], float]:
    """The multiplier of the base learning rate at update k (0-based)."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {schedule!r}; known: {', '.join(LR_SCHEDULES)}")
    decay_steps = steps - warmup_steps

    def factor(k: int) -> float:
        if k < warmup_steps:
            return (k + 1) / warmup_steps
        t = k - warmup_steps
        if schedule == "exponential":
            return lr_decay ** t
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(t, decay_steps) / decay_steps))
        return 1.0

    # A plain function (not a callable object): LambdaLR then leaves it out of its
    # state_dict, so a resumed run follows the schedule of its own config.
    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> LambdaLR:
    """LambdaLR over ``config``'s schedule; call ``.step()`` once per optimizer update."""
    return LambdaLR(optimizer, lr_factor(config.lr_schedule, steps=config.steps,
                                         warmup_steps=config.warmup_steps, lr_decay=config.lr_decay))

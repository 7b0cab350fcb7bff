"""The optimizer of ``TrainConfig.optimizer``: Adam, or AdamW (weight decay decoupled from the
gradient step, Loshchilov & Hutter 2019), with the config's ``lr``, ``beta1``, ``beta2`` and
``weight_decay`` (applied to every parameter).

    optimizer = make_optimizer(model.parameters(), TrainConfig(optimizer="adamw", weight_decay=0.01))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from latentar.training.config import TrainConfig

OPTIMIZER_CLASSES: dict[str, Callable[..., torch.optim.Optimizer]] = {"adam": torch.optim.Adam,
                                                                       "adamw": torch.optim.AdamW}


def make_optimizer(parameters: Iterable[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``config.optimizer`` over ``parameters``."""
    return OPTIMIZER_CLASSES[config.optimizer](parameters, lr=config.lr, betas=(config.beta1, config.beta2),
                                               weight_decay=config.weight_decay)

"""Module modes: eval mode for a block of code, the previous mode restored after."""

from __future__ import annotations

from torch import nn


class eval_mode:
    """Context manager: eval mode inside, the previous train/eval mode restored after."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self):
        self.was_training = self.module.training
        self.module.eval()
        return self.module

    def __exit__(self, *exc):
        self.module.train(self.was_training)

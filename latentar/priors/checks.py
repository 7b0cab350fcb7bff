"""Checks of the values a prior is handed: counts and integer tensors of symbols."""

from __future__ import annotations

import numbers
from typing import Any

import torch


def is_integer(value: Any) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_num_samples(n: Any) -> int:
    """The number of grids a sampler draws: an integer >= 1."""
    if not is_integer(n) or n < 1:
        raise ValueError(f"n (the number of grids to draw) must be an integer >= 1, got {n!r}")
    return int(n)


def check_integer_tensor(value: Any, name: str, shape: str) -> None:
    """``value`` must be a tensor of an integer dtype (not bool, not floating point)."""
    if isinstance(value, torch.Tensor) and not (value.dtype.is_floating_point or value.dtype.is_complex
                                                or value.dtype == torch.bool):
        return
    got = f"a {value.dtype} tensor" if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"
    raise TypeError(f"{name} must be an integer tensor {shape}, got {got}")


def outside(values: torch.Tensor, size: int) -> tuple[int, int] | None:
    """(min, max) of integer ``values`` when some lie outside [0, size), else None."""
    if not values.numel():
        return None
    extremes = torch.aminmax(values.long())  # long: min/max lack some unsigned dtypes
    low, high = int(extremes.min), int(extremes.max)  # the one host synchronisation of a check
    return (low, high) if low < 0 or high >= size else None

"""Memory caps: what a request will need is estimated before anything is allocated, and a
request that cannot fit under the cap is refused with a ``MemoryCapError`` naming it.

The cap, in bytes, for a device (``memory_cap``), first of:

1. ``max_memory(limit)``: a limit set for a block of code (the commands' ``--max-memory``);
2. the environment variable ``LATENTAR_MAX_MEMORY``;
3. ``DEFAULT_FRACTION`` (80 %) of the device's total memory: a CUDA device's
   (``torch.cuda.get_device_properties``), else the machine's physical memory, or the
   container's limit (cgroup v1 or v2) where that is lower.

Sizes are written ``8GB``, ``512MiB``, ``1.5T`` or a plain number of bytes (``parse_size``):
K, M, G, T, P are powers of 1000, KiB, MiB, GiB, TiB, PiB powers of 1024, case-insensitive.
The cap bounds one request of latentar, not the process: memory already held elsewhere
(other models, the allocator's cache) is not counted.

Estimates are orders of magnitude, not exact counts. Activations are measured by
``leaf_output_bytes``: the model runs on the meta device (shapes only: no memory, no
arithmetic) with a forward hook on every leaf module, and the bytes of every output are
summed. That is about what a training step keeps for the backward pass and what the fast
samplers' layer caches hold; the peak of a plain no-grad forward is lower (tensors die as
it goes), so the estimate errs on the safe side, by at most the number of layers.
Functional operations between modules (gates, residual sums, attention kernels) are not
counted: they are of the same order as the module outputs around them.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch
from torch import nn

ENV_VAR = "LATENTAR_MAX_MEMORY"
DEFAULT_FRACTION = 0.8  # of the device's total memory, when no limit is set
RAISE_HINT = f"ask for less, or raise the cap with --max-memory SIZE or {ENV_VAR}=SIZE (e.g. 64GB)"
UNITS = {"": 1, "b": 1, **{p + s: f ** e for e, p in enumerate("kmgtp", 1)
                           for s, f in (("", 1000), ("b", 1000), ("ib", 1024))}}
SIZE_PATTERN = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", re.IGNORECASE)
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")

_limit: ContextVar[tuple[int, str] | None] = ContextVar("latentar_max_memory", default=None)


class MemoryCapError(ValueError):
    """A request whose estimated memory exceeds the cap; the message names the request, the
    estimate, the cap and how to raise it."""


def parse_size(text: str | int, name: str = ENV_VAR) -> int:
    """'8GB', '512MiB', '1.5t', '100' (bytes) or an int -> bytes (>= 1); a ValueError naming
    ``name`` (the flag or variable it came from) otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        size = text
    else:
        match = SIZE_PATTERN.fullmatch(text) if isinstance(text, str) else None
        unit = match and UNITS.get(match[2].lower())
        if match is None or not unit:
            raise ValueError(f"{name} must be a size such as 8GB, 512MiB, 1.5T or a number of bytes, "
                             f"got {text!r}")
        size = int(float(match[1]) * unit)
    if size < 1:
        raise ValueError(f"{name} must be at least 1 byte, got {text!r}")
    return size


def format_size(size: float) -> str:
    """Bytes -> three significant digits in decimal units: 6.27e12 -> '6.27 TB'."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 999.5:
            return f"{size:.3g} {unit}"
        size /= 1000
    return f"{size:.3g} PB"


@contextlib.contextmanager
def max_memory(limit: str | int | None, name: str = "--max-memory") -> Iterator[None]:
    """Inside the block, the cap is ``limit`` (a size as ``parse_size`` reads it, named
    ``name`` in messages) on every device; None leaves the cap as it is."""
    token = _limit.set((parse_size(limit, name), f"{name} {limit}")) if limit is not None else None
    try:
        yield
    finally:
        if token is not None:
            _limit.reset(token)


def total_memory(device: torch.device | str | None = None) -> tuple[int, str]:
    """(bytes, what they are) of a CUDA device's memory, else of this machine (or container);
    also of this machine for a CUDA device asked about where torch sees none (a recipe checked
    for a GPU on a CPU-only machine)."""
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).total_memory, f"cuda:{index}'s"
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    limits = [physical] + [v for v in (_read_int(Path(p)) for p in CGROUP_LIMITS) if v]
    return min(limits), "this machine's" if min(limits) == physical else "this container's"


def _read_int(path: Path) -> int | None:
    """The integer in a file such as a cgroup's memory limit; None when absent or 'max'."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def cap_and_source(device: torch.device | str | None = None) -> tuple[int, str]:
    """(the cap in bytes, where it comes from in words) for ``device`` (see the module docstring)."""
    if (limit := _limit.get()) is not None:
        return limit
    if (text := os.environ.get(ENV_VAR, "").strip()):
        return parse_size(text), f"{ENV_VAR}={text}"
    total, whose = total_memory(device)
    return int(total * DEFAULT_FRACTION), f"{DEFAULT_FRACTION:.0%} of {whose} {format_size(total)}"


def memory_cap(device: torch.device | str | None = None) -> int:
    """The cap in bytes for ``device`` (default: the CPU)."""
    return cap_and_source(device)[0]


def check_fits(estimate: int, what: str, device: torch.device | str | None = None, detail: str = "") -> None:
    """Raise ``MemoryCapError`` when ``estimate`` bytes exceed the cap of ``device``.

    ``what`` names the request as the user made it ('sample -n 1000000000000', 'sampling.n =
    ...'); ``detail`` says what the estimate is made of."""
    cap, source = cap_and_source(device)
    if estimate > cap:
        detail = f" ({detail})" if detail else ""
        raise MemoryCapError(f"{what} needs about {format_size(estimate)}{detail}, more than the memory cap "
                             f"of {format_size(cap)} ({source}); {RAISE_HINT}")


def batch_that_fits(per_item: int, held: int = 0, device: torch.device | str | None = None) -> int:
    """The most items, each needing ``per_item`` bytes while worked on, that fit under the cap
    next to ``held`` bytes kept throughout; 0 when not even one does."""
    return max(0, (memory_cap(device) - held) // max(per_item, 1))


def tensor_bytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """Bytes of a tensor of ``shape`` and ``dtype`` (Python ints: no overflow)."""
    return math.prod(shape) * dtype.itemsize


def leaf_output_bytes(model: nn.Module, run: Callable[[nn.Module], Any]) -> int:
    """Sum of the bytes of every tensor that a leaf module of ``model`` outputs while ``run(model)``
    runs under no-grad; meant for a model on the meta device (see the module docstring)."""
    total = 0

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal total
        total += sum(t.numel() * t.element_size() for t in _tensors(output))

    hooks = [m.register_forward_hook(count) for m in model.modules() if next(m.children(), None) is None]
    try:
        with torch.no_grad():
            run(model)
    finally:
        for hook in hooks:
            hook.remove()
    return total


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """The tensors in a module output: a tensor, or nested tuples / lists / dicts of them."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)

"""Progress bars for long work: training, encoding, scoring, sampling, completion, fetching.

    for batch in progress_bar(loader, desc="score test"):
        ...

Every bar in latentar comes from `progress_bar`, which shows it only where someone watches:
on the main process (one bar, also under ``accelerate launch`` / torchrun), when stderr is a
terminal (tqdm's ``disable=None``), and not after ``set_quiet(True)`` (``latentar --quiet``).
"""

from __future__ import annotations

import os
from typing import Iterable

from accelerate import PartialState
from tqdm.auto import tqdm

_quiet = False  # set by `set_quiet`: the command line's --quiet


def set_quiet(quiet: bool) -> None:
    """Turn every progress bar of this process off (True) or back on (False)."""
    global _quiet
    _quiet = bool(quiet)


def is_main_process() -> bool:
    """Whether this is the main process of its run: Accelerate's answer once it has set up the
    processes, else the launcher's ``RANK`` (so asking never sets them up too early)."""
    if PartialState._shared_state:
        return PartialState().is_main_process
    return os.environ.get("RANK", "0") == "0"


def progress_bar(iterable: Iterable | None = None, *, desc: str, total: int | None = None,
                 initial: int = 0, unit: str = "it", leave: bool = False) -> tqdm:
    """A tqdm bar over ``iterable`` (or one to ``update`` by hand, with ``total``), shown only
    on the main process, on a terminal, and when not quiet; otherwise it shows nothing."""
    hidden = _quiet or not is_main_process()
    return tqdm(iterable, desc=desc, total=total, initial=initial, unit=unit, leave=leave,
                disable=True if hidden else None, dynamic_ncols=True)

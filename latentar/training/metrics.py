"""What the trainer logs: the metric window since the last log line (carried in checkpoints,
so a resumed run logs what an uninterrupted one logs) and appends to ``metrics.jsonl``."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate import Accelerator

from latentar.files import write_error


class MetricWindow:
    """Sums of the micro-batch losses and metrics since the last log, averaged over every process.

    Values may be tensors on the device: they are summed there and read once, at ``result``
    or ``gather`` (no host synchronisation per micro-batch).

    ``items_per_sec`` counts only the time spent inside ``timed`` blocks (the updates), so
    evaluations, previews and checkpoints between them do not lower it. The timing is this
    session's own: a resumed run's first window is timed from the resume."""

    def __init__(self):
        self._reset()
        self._reset_timing()

    def _reset(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = {}
        self.count, self.items = 0, 0

    def _reset_timing(self) -> None:
        self.seconds, self.timed_items = 0.0, 0  # inside ``timed`` blocks since the last log, this process

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Count the block's wall time, and the items it adds, toward ``items_per_sec``."""
        items, tic = self.items, time.perf_counter()
        yield
        self.seconds += time.perf_counter() - tic
        self.timed_items += self.items - items

    def add(self, loss: torch.Tensor | float, metrics: dict[str, torch.Tensor | float], items: int) -> None:
        for name, value in {"loss": loss, **metrics}.items():
            value = value.detach().double() if isinstance(value, torch.Tensor) else float(value)
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += 1
        self.items += items

    def _totals(self, accelerator: Accelerator, *extra: float) -> tuple[list[str], list[float]]:
        """(names, their sums followed by ``extra``, count and items), each summed over the processes."""
        names, device = sorted(self.sums), accelerator.device
        totals = torch.stack([torch.as_tensor(self.sums[n], dtype=torch.float64, device=device).reshape(())
                              for n in names] + [torch.tensor(float(v), dtype=torch.float64, device=device)
                                                 for v in (*extra, self.count, self.items)])
        return names, accelerator.reduce(totals, reduction="sum").tolist()

    def result(self, accelerator: Accelerator) -> dict:
        """The window's means (a collective: every process calls it), and ``items_per_sec``: the
        items of every process over this process's time in ``timed`` blocks."""
        names, totals = self._totals(accelerator, self.timed_items)
        # a window whose updates were all skipped has no loss to report
        out = {n: totals[i] / totals[-2] for i, n in enumerate(names)} if totals[-2] else {}
        out["items_per_sec"] = totals[-3] / self.seconds  # result follows an update: seconds > 0
        self._reset()
        self._reset_timing()
        return out

    def gather(self, accelerator: Accelerator) -> dict:
        """The window summed over the processes, as ``TrainerState.window`` holds it (a
        collective: every process calls it). The window goes on from those sums on the main
        process (from zero on the others), exactly as a run resumed from them does."""
        names, totals = self._totals(accelerator)
        state = {"sums": dict(zip(names, totals)), "count": int(totals[-2]), "items": int(totals[-1])}
        self.restore(state if state["count"] else {}, main=accelerator.is_main_process)
        return state if state["count"] else {}

    def restore(self, state: dict, main: bool) -> None:
        """Go on from the sums ``state`` (``gather``'s) on the main process; empty elsewhere."""
        self._reset()
        if main and state:
            self.sums, self.count, self.items = dict(state["sums"]), state["count"], state["items"]


def append_line(path: Path, line: str) -> None:
    """Append ``line`` and a newline to the regular file ``path`` (created if missing), never
    through a link; a failed write is a ``WriteError`` naming the file."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
        with os.fdopen(fd, "a") as f:
            f.write(line + "\n")
    except OSError as e:
        raise write_error(path, e) from e

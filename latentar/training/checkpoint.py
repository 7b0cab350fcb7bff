"""Resume checkpoints: published whole or not at all, verified before use, read without
unpickling arbitrary objects.

A checkpoint is a folder ``checkpoints/step_00000500/``::

    model.safetensors            the weights            ┐ accelerator.save_state
    optimizer.bin, scheduler.bin Adam, the LR schedule  │ (read back with torch.load
    random_states_<rank>.pkl     each process's RNGs    │ weights_only=True; the model
    scaler.pt                    fp16 loss scale (GPU)  ┘ with safetensors)
    trainer_state.json           the trainer's own counters (``TrainerState``)
    ema.safetensors              the EMA copy, n_averaged included (when EMA is on)
    manifest.json                size and sha256 of every other file, written last

It is written into ``step_….partial``; every file and the folder are fsynced, then the
folder is renamed to its final name and the parent fsynced, so a crash at any moment
leaves either a complete checkpoint or a .partial folder that the next start removes.

Resuming tries the checkpoints newest first. One is used only when its manifest holds
(no file missing, added, resized or changed) and every file of it loads; otherwise the
problem is printed with the checkpoint's name and the next older one is tried. Every
process takes part in each decision, so all of them resume from the same checkpoint.

``fault_hook`` (None outside tests) is called at each of ``FAULT_POINTS`` while a
checkpoint is written, so tests can interrupt a run exactly there.
"""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator
from safetensors import SafetensorError
from torch.optim.swa_utils import AveragedModel

from latentar.files import WriteError, fsync_folder, is_real_folder, write_error
from latentar.training.checkpoint_files import (
    LOAD_ERRORS,
    PARTIAL,
    STATE_FILE,
    DamagedCheckpoint,
    TrainerState,
    load_ema,
    probe_files,
    read_random_states,
    read_trainer_state,
    restore_random_states,
    rng_file,
    step_folder_name,
    verify_manifest,
    write_manifest,
    write_trainer_state,
)

FAULT_POINTS = ("after_save_state", "after_manifest", "before_rename", "after_rename", "before_prune")

fault_hook: Callable[[str, Path], None] | None = None


class CheckpointError(ValueError):
    """No checkpoint of a run folder can be resumed from; the message names each and why."""


def fault_point(name: str, folder: Path) -> None:
    """Call ``fault_hook(name, folder)`` when a test has set one."""
    assert name in FAULT_POINTS, name
    if fault_hook is not None:
        fault_hook(name, folder)


def publish(partial: Path, final: Path) -> None:
    """Rename the complete ``partial`` folder to ``final`` (replacing an older one) durably."""
    fault_point("before_rename", partial)
    if is_real_folder(final):
        shutil.rmtree(final)
    elif os.path.lexists(final):  # a link (or file) at the name: removed, what it points to untouched
        final.unlink()
    partial.rename(final)
    fsync_folder(final.parent)
    fault_point("after_rename", final)


def prune(checkpoints: list[Path], keep: int) -> None:
    """Remove all but the newest ``keep`` of ``checkpoints`` (real folders, oldest first)."""
    if checkpoints:
        fault_point("before_prune", checkpoints[-1])
    for old in checkpoints[:-keep]:
        shutil.rmtree(old)
    if checkpoints:
        fsync_folder(checkpoints[-1].parent)


# ---- saving and choosing -------------------------------------------------------------
@contextmanager
def written(partial: Path):
    """Writes into the unfinished checkpoint ``partial``: a failure (a full disk, an I/O error,
    torch's "iostream error", safetensors' serialisation error) removes it, keeping the older
    checkpoints, and raises ``WriteError`` "cannot write PARTIAL: reason"."""
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as e:
        error = e if isinstance(e, WriteError) else write_error(partial, e)
        shutil.rmtree(partial, ignore_errors=True)
        raise error from e


class Checkpoints:
    """The checkpoint folders of one run (``root``), written and read through ``accelerator``."""

    def __init__(self, root: Path, accelerator: Accelerator, keep: int):
        self.root, self.accelerator, self.keep = Path(root), accelerator, keep
        self._reported: set[Path] = set()  # strays already reported by ``folders``

    def folders(self) -> list[Path]:
        """Published checkpoint folders, oldest first. Anything else under ``root`` (a link
        to a folder, a file) is not a checkpoint: it is reported once and left alone."""
        found = sorted(p for p in self.root.glob("step_*") if p.suffix != PARTIAL)
        strays = [p for p in found if not is_real_folder(p)]
        for stray in strays:
            if stray not in self._reported:
                self._reported.add(stray)
                self._say(f"{stray} is not a checkpoint folder (a link or a file); it is left alone")
        return [p for p in found if p not in strays]

    def remove_partial(self) -> None:
        """Remove the unfinished folders a crash left (main process); links are only unlinked."""
        for unfinished in self.root.glob(f"*{PARTIAL}"):
            if is_real_folder(unfinished):
                shutil.rmtree(unfinished)
            else:
                unfinished.unlink()

    def save(self, state: TrainerState, ema: AveragedModel | None) -> Path:
        """Write the checkpoint of update ``state.step``; called on every process."""
        acc = self.accelerator
        final = self.root / step_folder_name(state.step)
        partial = final.with_suffix(PARTIAL)
        with written(partial):
            acc.save_state(str(partial))
        fault_point("after_save_state", partial)
        acc.wait_for_everyone()
        if acc.is_main_process:
            with written(partial):
                write_trainer_state(partial, state, ema)
                write_manifest(partial)
            fault_point("after_manifest", partial)
            publish(partial, final)
            prune(self.folders(), self.keep)
        acc.wait_for_everyone()
        return final

    def resume(self, ema: AveragedModel | None) -> tuple[Path, TrainerState] | None:
        """Load the newest usable checkpoint into the accelerator's objects and ``ema``; its
        folder and TrainerState, or None when the run has none. Raises ``CheckpointError``
        when there are checkpoints and none of them can be used."""
        found = self.folders()[::-1]
        problems: list[str] = []
        for folder in found:
            state = self._try(folder, ema, problems)
            if state is not None:
                if problems:
                    self._say(f"resuming from the older checkpoint {folder} instead")
                return folder, state
        if found:
            raise CheckpointError(f"no checkpoint in {self.root} can be resumed from: " + "; ".join(problems)
                                  + ". Remove the damaged ones or train in another folder")
        return None

    def _try(self, folder: Path, ema: AveragedModel | None, problems: list[str]) -> TrainerState | None:
        """``folder``'s TrainerState once everything of it is loaded, or None (its problem
        appended to ``problems`` and printed). Every process reaches the same verdict."""
        acc = self.accelerator
        # the main process checks the shared files; then each one loads what it reads
        found = verify_manifest(folder) if acc.is_main_process else []
        state = None
        if self._all_agree(not found):
            try:
                state = self._load(folder, ema)
            except (DamagedCheckpoint, *LOAD_ERRORS) as e:
                found = [str(e) if isinstance(e, DamagedCheckpoint) else f"{type(e).__name__}: {e}"]
            if not self._all_agree(not found):
                state = None
        if state is None:
            if found:
                self._say(f"checkpoint {folder} cannot be used: {'; '.join(found)}", everyone=True)
            problems.append(f"{folder.name}: {'; '.join(found) or 'another process could not use it'}")
        return state

    def _load(self, folder: Path, ema: AveragedModel | None) -> TrainerState:
        acc = self.accelerator
        state = read_trainer_state(folder)
        if folder.name != step_folder_name(state.step):
            raise DamagedCheckpoint(f"{STATE_FILE} is of update {state.step}, not of this folder's")
        probe_files(folder)
        rng = read_random_states(folder, acc.process_index)
        load_ema(folder, ema, acc.device)
        acc.load_state(str(folder), load_kwargs={"weights_only": True})
        restore_random_states(rng, rng_file(acc.process_index))
        return state

    def _all_agree(self, ok: bool) -> bool:
        """Whether ``ok`` holds on every process (a collective: every process calls it)."""
        failed = torch.tensor(0.0 if ok else 1.0, device=self.accelerator.device)
        return self.accelerator.reduce(failed, reduction="sum").item() == 0

    def _say(self, line: str, everyone: bool = False) -> None:
        acc = self.accelerator
        if everyone and acc.num_processes > 1:
            line = f"process {acc.process_index}: {line}"
        if everyone or acc.is_main_process:
            print(f"latentar: {line}", file=sys.stderr, flush=True)

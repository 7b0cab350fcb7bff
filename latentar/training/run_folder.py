"""Run folders are owned: one process trains in a folder at a time, and only its own run.

    lock = claim_run(out_dir, run_record(model, config), accelerator,
                     outputs=("checkpoints", "metrics.jsonl", "model", "done.json"), resume=True)
    try:
        ...                      # train
    finally:
        lock.release()

Two files in the folder carry the ownership::

    .lock      an exclusive OS lock (``flock``; ``LockFileEx`` on Windows, through ``filelock``)
               held by the process that works in the folder; the file says who holds it (pid,
               host, command line) and is removed on release. The OS drops the lock when that
               process ends in any way (kill -9 included), so a lock file left behind never
               blocks anyone: only the lock on it counts.
    run.json   what trains there: the model's config and the training settings that define
               the run (``run_record``); a resume must ask for the same. A setting that a
               recorded run predates (of the training or of the model) reads as its default.

A folder that already holds outputs of a run is taken over only when asked: ``resume``
continues the recorded run (the same record), ``overwrite`` removes those outputs (the
named ones and run.json, never other files) and starts afresh. Under several processes
only the main one locks and checks; every process waits for it and raises the same
``RunFolderError`` when it refuses.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
import sys
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from accelerate.utils import broadcast
from filelock import lock_descriptor, unlock_descriptor

from latentar.files import (
    MAX_CONFIG_BYTES,
    BadFileError,
    atomic_write_json,
    is_real_folder,
    read_json,
    remove_stale_temporaries,
)
from latentar.registry import MODELS
from latentar.run_files import LOCK_FILE, RUN_FILE
from latentar.saving import meta_model
from latentar.training.config import TrainConfig

# TrainConfig fields a resumed run may change: how long it trains, how often and where it
# reports (and under which tracker names), samples and saves, how it loads data and how many
# non-finite updates it tolerates.
# compile, checkpoint_activations and channels_last change how fast and in how much memory, not what is computed.
# The other fields change the updates themselves.
RESUMABLE_FIELDS = ("steps", "eval_every", "save_every", "log_every", "num_workers", "max_nonfinite", "report_to",
                    "sample_every", "compile", "checkpoint_activations", "channels_last", "keep_checkpoints",
                    "tracker_project", "tracker_run_name")
SHOWN_DIFFERENCES = 5  # differing keys named in a refusal
# the lock file is opened for appending (opening never erases the holder's record), without
# following a link, waiting on a FIFO or passing into child processes (the last three: POSIX only)
LOCK_OPEN_FLAGS = (os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                   | getattr(os, "O_CLOEXEC", 0))


class RunFolderError(ValueError):
    """A run folder that this process may not train in (held by another one, or another run's)."""


class Processes(Protocol):
    """What the claim needs to know of the processes of a run (an Accelerator or a PartialState)."""

    is_main_process: bool
    num_processes: int
    device: torch.device


class FolderLock:
    """An exclusive, non-blocking lock on ``folder/.lock`` (``filelock.lock_descriptor``); the file names its holder."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._file = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> None:
        """Take the lock (creating the folder), or raise ``RunFolderError`` naming the holder."""
        if self.folder.exists() and not self.folder.is_dir():
            raise RunFolderError(f"{self.folder} is a file; a run folder must be a folder (a new one, or a run's)")
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            file = self._open()
            try:
                locked = lock_descriptor(file.fileno(), blocking=False)
            except OSError:  # a file system without locks
                file.close()
                raise
            if not locked:
                file.seek(0)
                holder = describe_holder(file.read(MAX_CONFIG_BYTES))
                file.close()
                raise RunFolderError(f"{self.folder} is in use by {holder}, which holds {self.path}; wait for "
                                     "it to finish, or choose another folder")
            if self._still_at_path(file):
                break
            file.close()  # a holder removed this file on release after we opened it: open the new one
        file.truncate(0)
        file.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": sys.argv}) + "\n")
        file.flush()
        self._file = file

    def _open(self):
        """The lock file, opened for appending (opening never erases the holder's record) without
        following a link at its name; a link or anything but a regular file there is refused."""
        refusal = (f"{self.path} is not a regular file of its own (a link, hard link, folder, FIFO or device); "
                   "latentar never writes through one: remove it, or choose another folder")
        try:
            fd = os.open(self.path, LOCK_OPEN_FLAGS, 0o644)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                raise RunFolderError(refusal) from None
            raise
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode) or found.st_nlink != 1:  # a hard link shares another file
            os.close(fd)
            raise RunFolderError(refusal)
        return os.fdopen(fd, "a+")

    def _still_at_path(self, file) -> bool:
        try:
            return os.path.samestat(os.stat(self.path), os.fstat(file.fileno()))
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file and drop the lock (a no-op when not held)."""
        if self._file is not None:
            self.path.unlink(missing_ok=True)  # while locked: whoever opened it sees it is gone
            unlock_descriptor(self._file.fileno())
            self._file.close()
            self._file = None


def describe_holder(text: str) -> str:
    """The content of a lock file -> "pid 123 on host (latentar run ...)"."""
    try:
        holder = json.loads(text)
        words = f"pid {int(holder['pid'])} on {holder['host']}"
    except (ValueError, TypeError, KeyError):
        return "another process (it has not recorded its pid yet)"
    command = holder.get("command")
    return f"{words} ({' '.join(map(str, command))})" if isinstance(command, list) and command else words


def hold(folder: str | Path, processes: Processes,
         prepare: Callable[[Path], None] | None = None) -> FolderLock:
    """Lock ``folder`` on the main process and run ``prepare(folder)`` there, under the lock.

    Every process returns the lock (held on the main process only) once that is done, or
    raises the same ``RunFolderError``: a refusal on the main one never leaves the others waiting.
    """
    folder = Path(folder)
    lock, error = FolderLock(folder), None
    if processes.is_main_process:
        try:
            lock.acquire()
            if prepare is not None:
                prepare(folder)
        except RunFolderError as e:
            error = e
        except OSError as e:  # a read-only folder, one we may not enter, ...
            error = RunFolderError(f"cannot use {folder} as a run folder: {e}")
        except BaseException:
            lock.release()
            raise
        if error is not None:
            lock.release()
    message = share_text(str(error) if error is not None else "", processes)
    if message:
        raise error if error is not None else RunFolderError(message)
    return lock


def share_text(text: str, processes: Processes) -> str:
    """The main process's ``text`` on every process (a length, then the UTF-8 bytes)."""
    if processes.num_processes == 1:
        return text
    data = torch.tensor(list(text.encode()), dtype=torch.uint8, device=processes.device)  # (L,)
    length = int(broadcast(torch.tensor([data.numel()], device=processes.device), from_process=0))
    if length == 0:
        return ""
    if not processes.is_main_process:
        data = torch.zeros(length, dtype=torch.uint8, device=processes.device)
    return bytes(broadcast(data, from_process=0).cpu().tolist()).decode()


# ---- what trains in a folder ------------------------------------------------------------
def run_record(model, config: TrainConfig) -> dict:
    """What defines a run: the model (its type and config) and the TrainConfig fields outside
    ``RESUMABLE_FIELDS``, as plain JSON (as read back from run.json)."""
    record = {"model_type": model.model_type, "model": model.config_dict(), "train": train_record(config)}
    return json.loads(json.dumps(record))  # tuples become lists, as in the file


def train_record(config: TrainConfig) -> dict:
    """The TrainConfig fields that define a run (those outside ``RESUMABLE_FIELDS``)."""
    return {k: v for k, v in asdict(config).items() if k not in RESUMABLE_FIELDS}


def with_defaults(recorded: dict) -> dict:
    """A run.json as read, each setting it predates (a newer latentar's: a training setting, or a
    field of the model's config such as a prior's augmentations) read as its default."""
    train = recorded.get("train")
    if isinstance(train, dict):
        recorded = {**recorded, "train": {**json.loads(json.dumps(train_record(TrainConfig()))), **train}}
    return {**recorded, "model": model_with_defaults(recorded)} if "model" in recorded else recorded


def model_with_defaults(recorded: dict) -> Any:
    """The model config of a run.json with the fields it predates at their defaults: the model
    rebuilt from it on the meta device (no memory, no work) and described again; as recorded when
    it cannot be rebuilt (an unknown model, a damaged record), so that the comparison names what
    differs."""
    config = recorded["model"]
    try:
        model = meta_model(lambda: MODELS.get(recorded["model_type"]).from_config(config), "the recorded model")
    except (LookupError, TypeError, ValueError):  # no model_type: a KeyError; FieldError: a ValueError
        return config
    return json.loads(json.dumps(model.config_dict()))


def claim_run(folder: str | Path, record: dict, processes: Processes, *, outputs: tuple[str, ...],
              resume: bool = False, overwrite: bool = False) -> FolderLock:
    """Lock ``folder`` and take it over for the run ``record`` (see ``take_over``)."""
    if resume and overwrite:
        raise RunFolderError(f"resume and overwrite exclude each other: resume continues the run in {folder}, "
                             "overwrite replaces it; choose one")
    return hold(folder, processes, partial(take_over, record=record, outputs=outputs, resume=resume,
                                           overwrite=overwrite))


def take_over(folder: Path, *, record: dict, outputs: tuple[str, ...], resume: bool, overwrite: bool) -> None:
    """Make ``folder`` the run ``record``'s: an empty folder starts it; one holding any of
    ``outputs`` (an earlier run's) needs ``overwrite`` (they are removed), or ``resume`` and
    the same run.json. Writes run.json for a run that starts."""
    remove_stale_temporaries(folder)
    found = [name for name in outputs if os.path.lexists(folder / name)]
    if not overwrite:
        refuse_links(folder, found)
    if found and overwrite:
        remove(folder, [*found, RUN_FILE])
    elif found:
        shown = ", ".join(f"{name}/" if (folder / name).is_dir() else name for name in found)
        if not resume:
            raise RunFolderError(f"{folder} already holds {shown} of an earlier run; continue it (resume=True, "
                                 "CLI --resume), replace it (overwrite=True, CLI --overwrite), or choose "
                                 "another folder")
        check_owner(folder, record, shown)
        return
    atomic_write_json(folder / RUN_FILE, record)


def refuse_links(folder: Path, names: list[str] | tuple[str, ...]) -> None:
    """Refuse (``RunFolderError``) a run folder where any of ``names`` is a symbolic link: latentar
    never reads or writes through a link out of a run folder."""
    links = [name for name in names if (folder / name).is_symlink()]
    if links:
        raise RunFolderError(f"{folder} holds {', '.join(links)} as symbolic link(s); latentar never follows "
                             "links out of a run folder: remove them, replace the run with overwrite=True "
                             "(CLI --overwrite), or choose another folder")


def check_owner(folder: Path, record: dict, shown: str) -> None:
    """Refuse to resume unless ``folder/run.json`` records the run ``record``; name what differs."""
    path = folder / RUN_FILE
    replace = "replace it with overwrite=True (CLI --overwrite), or choose another folder"
    if not os.path.lexists(path):
        raise RunFolderError(f"{folder} holds {shown} but no {RUN_FILE}, so nothing says which run made them "
                             f"(another program, or an older latentar); {replace}")
    try:
        recorded = read_json(path)
    except BadFileError as e:
        raise RunFolderError(f"{path} is damaged ({e}); {replace}") from e
    if not isinstance(recorded, dict):
        raise RunFolderError(f"{path} is damaged (a JSON object expected, got {type(recorded).__name__}); "
                             f"{replace}")
    recorded = with_defaults(recorded)
    changed = sorted(differing_keys(recorded, record), key=lambda k: (k.count("."), k))  # the broadest first
    if changed:
        listed = "; ".join(f"{k} is {_value(recorded, k)} there, you asked for {_value(record, k)}"
                           for k in changed[:SHOWN_DIFFERENCES])
        more = f" (and {len(changed) - SHOWN_DIFFERENCES} more)" if len(changed) > SHOWN_DIFFERENCES else ""
        raise RunFolderError(f"{folder} trains another run: {listed}{more}; resume it with its own settings, "
                             f"{replace}")


def differing_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts (a missing key reads as None)."""
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += differing_keys(a, b, f"{prefix}{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys


def _value(record: dict, dotted: str) -> str:
    value = record
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return "absent"
        value = value[key]
    return repr(value)


def remove(folder: Path, names: list[str]) -> None:
    """Delete the files and folders ``names`` of ``folder`` (those that exist)."""
    for name in names:
        path = folder / name
        if is_real_folder(path):
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

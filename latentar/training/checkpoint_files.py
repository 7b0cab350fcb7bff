"""The files of one checkpoint folder (see ``latentar.training.checkpoint``), each read safely:
the manifest (size and sha256 of every file, checked without following links or reading past
a recorded size), the trainer's own state (``TrainerState``, JSON), the EMA weights
(safetensors), and Accelerate's files (read with ``weights_only=True``). A file that cannot
be used raises ``DamagedCheckpoint`` naming it."""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import random
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import OPTIMIZER_NAME, RNG_STATE_NAME, SAFE_MODEL_NAME, SCALER_NAME, SCHEDULER_NAME, load
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch.optim.swa_utils import AveragedModel

from latentar.files import BadFileError, atomic_write_bytes, atomic_write_json, is_regular_file, open_regular, read_json

FORMAT_VERSION = 1  # of manifest.json
STATE_FORMAT_VERSION = 2  # of trainer_state.json: 2 adds the metric window
STATE_FILE = "trainer_state.json"
EMA_FILE = "ema.safetensors"
MANIFEST_FILE = "manifest.json"
PARTIAL = ".partial"
# every file a checkpoint may hold besides the manifest; anything else makes it unusable
CHECKPOINT_FILES = re.compile(
    rf"^({SAFE_MODEL_NAME}(_\d+)?\.safetensors|{OPTIMIZER_NAME}(_\d+)?\.bin|{SCHEDULER_NAME}(_\d+)?\.bin"
    rf"|{RNG_STATE_NAME}_\d+\.pkl|{re.escape(SCALER_NAME)}|{re.escape(STATE_FILE)}|{re.escape(EMA_FILE)})$")
RNG_KEYS = ("random_state", "numpy_random_seed", "torch_manual_seed")
# Reading a checkpoint file can fail in any of these ways; each makes the checkpoint unusable.
LOAD_ERRORS = (OSError, EOFError, RuntimeError, ValueError, TypeError, KeyError, pickle.UnpicklingError,
               SafetensorError)
CHUNK = 1 << 20


class DamagedCheckpoint(Exception):
    """One file of one checkpoint that cannot be used (caught while choosing a checkpoint)."""


@dataclass
class TrainerState:
    """The trainer's own counters, carried from checkpoint to checkpoint in trainer_state.json."""

    step: int = 0  # finished updates, skipped ones included
    nonfinite_streak: int = 0  # updates skipped in a row (non-finite loss or gradients), up to now
    skipped_updates: int = 0  # updates skipped in the whole run
    # the metric window since the last log line, summed over the processes: {"sums": {name: float},
    # "count": micro-batches, "items": examples}; {} when empty. A resumed run logs what an uninterrupted one logs.
    window: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format_version": STATE_FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data) -> TrainerState:
        """Strict: exactly the keys ``to_json`` writes, the counters non-negative integers, the
        window as ``check_window`` takes it. Format 1 (no window) reads with an empty window."""
        version = data.get("format_version") if isinstance(data, dict) else None
        names = [f.name for f in fields(cls) if version != 1 or f.name != "window"]
        expected = {"format_version", *names}
        if not isinstance(data, dict) or set(data) != expected:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise DamagedCheckpoint(f"{STATE_FILE} must hold the keys {sorted(expected)}, got {got}")
        if version not in (1, STATE_FORMAT_VERSION):
            raise DamagedCheckpoint(f"{STATE_FILE} has format_version {version!r}; "
                                    f"this latentar reads 1 and {STATE_FORMAT_VERSION}")
        values = {name: data[name] for name in names}
        for name, value in values.items():
            if name != "window" and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise DamagedCheckpoint(f"{STATE_FILE}: {name} must be an integer >= 0, got {value!r}")
        check_window(values.get("window", {}))
        return cls(**values)


def check_window(window) -> None:
    """A metric window as trainer_state.json holds it: {} or {"sums": {name: finite number},
    "count": int >= 0, "items": int >= 0}; DamagedCheckpoint otherwise."""
    if window == {}:
        return
    counts_ok = isinstance(window, dict) and all(
        type(window.get(key)) is int and window[key] >= 0 for key in ("count", "items"))
    sums = window.get("sums") if isinstance(window, dict) else None
    sums_ok = isinstance(sums, dict) and all(
        type(v) in (int, float) and math.isfinite(v) for v in sums.values())
    if not (counts_ok and sums_ok and set(window) == {"sums", "count", "items"}):
        raise DamagedCheckpoint(f"{STATE_FILE}: window must be {{}} or {{\"sums\": {{name: number}}, "
                                f"\"count\": int, \"items\": int}}, got {window!r:.200}")


# ---- files on disk -----------------------------------------------------------------
def file_digest(path: Path, limit: int | None = None) -> dict:
    """{"size", "sha256"} of the regular file ``path``, fsynced on the way (it may be fresh).
    With ``limit``, at most ``limit + 1`` bytes are read: a larger file's size then reads as
    ``limit + 1`` (enough to tell that it is not the recorded file)."""
    digest, size = hashlib.sha256(), 0
    with open_regular(path) as f:
        while chunk := f.read(CHUNK if limit is None else min(CHUNK, limit + 1 - size)):
            digest.update(chunk)
            size += len(chunk)
        os.fsync(f.fileno())
    return {"size": size, "sha256": digest.hexdigest()}


def write_manifest(folder: Path) -> None:
    """fsync every file of ``folder``, record each one's size and sha256 in manifest.json, fsync the folder."""
    files = {p.name: file_digest(p) for p in sorted(folder.iterdir()) if p.name != MANIFEST_FILE}
    atomic_write_json(folder / MANIFEST_FILE, {"format_version": FORMAT_VERSION, "files": files})  # + folder


def read_manifest(folder: Path) -> dict[str, tuple[int, str]]:
    """File name -> (size, sha256) as ``folder``'s manifest records them; DamagedCheckpoint if it cannot."""
    path = folder / MANIFEST_FILE
    if not os.path.lexists(path):
        raise DamagedCheckpoint(f"it has no {MANIFEST_FILE}, so it cannot be verified (it was written by an "
                                "older latentar, or not completely)")
    try:
        listed = read_json(path)["files"]
        listed = {name: (entry["size"], entry["sha256"]) for name, entry in listed.items()}
    except (BadFileError, KeyError, TypeError, AttributeError) as e:
        raise DamagedCheckpoint(f"{MANIFEST_FILE} is not a checkpoint manifest ({type(e).__name__}: {e})") from e
    bad = [name for name, (size, sha256) in listed.items()
           if type(size) is not int or size < 0 or not isinstance(sha256, str)]
    if bad:
        raise DamagedCheckpoint(f"{MANIFEST_FILE} records no valid size and sha256 for {', '.join(sorted(bad))}")
    return listed


def verify_manifest(folder: Path) -> list[str]:
    """What is wrong with ``folder`` against its manifest: [] when every file is as recorded.
    Every file must be a regular file (a link or a special file is never followed or read),
    and none is read past its recorded size."""
    try:
        listed = read_manifest(folder)
    except DamagedCheckpoint as e:
        return [str(e)]
    present = {p.name for p in folder.iterdir() if p.name != MANIFEST_FILE}
    problems = [f"{name} is not a file of a latentar checkpoint" for name in sorted(present | set(listed))
                if not CHECKPOINT_FILES.match(name)]
    problems += [f"{name} is not listed in {MANIFEST_FILE}" for name in sorted(present - set(listed))]
    problems += [f"{name} is missing" for name in sorted(set(listed) - present)]
    problems += [f"{name} is not a regular file (a link, folder, FIFO or device)"
                 for name in sorted(present) if not is_regular_file(folder / name)]
    for name in sorted(present & set(listed)):
        size, sha256 = listed[name]
        if not is_regular_file(folder / name):
            continue
        found = file_digest(folder / name, limit=size)
        if found["size"] != size:
            more = "more than " if found["size"] > size else ""
            problems.append(f"{name} has {more}{min(found['size'], size)} bytes, {MANIFEST_FILE} says {size}")
        elif found["sha256"] != sha256:
            problems.append(f"{name} does not match its sha256 in {MANIFEST_FILE} (the file is damaged)")
    return problems


# ---- the trainer's own state ---------------------------------------------------------
def write_trainer_state(folder: Path, state: TrainerState, ema: AveragedModel | None) -> None:
    """trainer_state.json and, with EMA, ema.safetensors (each written and fsynced atomically)."""
    atomic_write_json(folder / STATE_FILE, state.to_json())
    if ema is not None:
        tensors = {k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}
        atomic_write_bytes(folder / EMA_FILE, safetensors_bytes(tensors))


def read_trainer_state(folder: Path) -> TrainerState:
    try:
        return TrainerState.from_json(read_json(folder / STATE_FILE))
    except BadFileError as e:
        raise DamagedCheckpoint(f"{STATE_FILE} is not valid JSON ({e})") from e


def load_ema(folder: Path, ema: AveragedModel | None, device: torch.device) -> None:
    """Load ema.safetensors into ``ema`` strictly (every key, every shape)."""
    path = folder / EMA_FILE
    if ema is None:
        if path.exists():
            raise DamagedCheckpoint(f"{EMA_FILE} is present, but this run trains without EMA (ema_decay None)")
        return
    if not path.is_file():
        raise DamagedCheckpoint(f"{EMA_FILE} is missing, but this run trains with EMA")
    try:
        ema.load_state_dict(load_file(str(path), device=str(device)), strict=True)
    except (SafetensorError, RuntimeError, OSError) as e:
        raise DamagedCheckpoint(f"{EMA_FILE} does not hold this run's EMA weights ({e})") from e


def probe_files(folder: Path) -> None:
    """Open every Accelerate file of ``folder`` the safe way before Accelerate reads it, so a
    file that cannot be read is named: safetensors headers are parsed, pickled files are
    read with weights_only=True (memory-mapped: their tensors are not loaded)."""
    for path in sorted(folder.iterdir()):
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt") as f:
                    f.keys()
            elif path.suffix in (".bin", ".pkl", ".pt"):
                load(path, map_location="cpu", weights_only=True, mmap=True)
        except LOAD_ERRORS as e:
            raise DamagedCheckpoint(f"{path.name} cannot be read safely ({type(e).__name__}: {e})") from e


def step_folder_name(step: int) -> str:
    return f"step_{step:08d}"


def rng_file(rank: int) -> str:
    """The name of process ``rank``'s RNG-state file, as Accelerate writes it."""
    return f"{RNG_STATE_NAME}_{rank}.pkl"


def read_random_states(folder: Path, rank: int) -> dict:
    """Process ``rank``'s RNG states (read with weights_only=True), checked to be complete."""
    path = folder / rng_file(rank)
    if not path.is_file():
        raise DamagedCheckpoint(f"{path.name} (the RNG states of process {rank}) is missing")
    try:
        states = load(path, weights_only=True)
    except LOAD_ERRORS as e:
        raise DamagedCheckpoint(f"{path.name} cannot be read ({type(e).__name__}: {e})") from e
    missing = [key for key in RNG_KEYS if not isinstance(states, dict) or key not in states]
    if missing:
        raise DamagedCheckpoint(f"{path.name} lacks the RNG states {missing}")
    return states


def restore_random_states(states: dict, name: str) -> None:
    """Set the Python, NumPy, torch (and CUDA) RNGs from ``states``, read from file ``name``.
    Accelerate skips a failure to do so silently; this raises."""
    try:
        random.setstate(states["random_state"])
        np.random.set_state(states["numpy_random_seed"])
        torch.set_rng_state(states["torch_manual_seed"])
        if torch.cuda.is_available() and "torch_cuda_manual_seed" in states:
            torch.cuda.set_rng_state_all(states["torch_cuda_manual_seed"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise DamagedCheckpoint(f"{name} holds RNG states that cannot be set ({type(e).__name__}: {e})") from e

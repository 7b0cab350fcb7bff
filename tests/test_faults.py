"""Fault injection: runs cut at every point of a checkpoint write, damaged and planted
checkpoint files. A resumed run must end bitwise equal to an uninterrupted one, a damaged
checkpoint must be named and skipped for the older one, and no file may run code."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from accelerate.utils import load
from prior_cases import tiny_prior
from safetensors.torch import load_file
from test_training import train

import latentar
from latentar import cli
from latentar.files import WriteError
from latentar.training import checkpoint, checkpoint_files
from latentar.training.checkpoint import FAULT_POINTS, CheckpointError, write_manifest
from latentar.training.run_folder import RunFolderError

STEPS, SAVE_EVERY = 6, 2  # checkpoints at updates 2, 4 and 6; the newest two are kept
NEWEST, OLDER = "step_00000006", "step_00000004"
FILES = ["model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "trainer_state.json",
         "ema.safetensors"]


class Kill(BaseException):
    """Stands for the process dying: nothing on the way catches it."""


class Payload:
    """Unpickling this creates ``marker``: proof that a load path ran code from a file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def short_run(out: Path, resume: bool = False):
    return train(out, resume=resume, steps=STEPS, save_every=SAVE_EVERY)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run; its folder is copied by the tests that damage one."""
    out = tmp_path_factory.mktemp("reference") / "run"
    short_run(out)
    return out


def assert_same_run(out: Path, reference: Path) -> None:
    """The exported model and the newest checkpoint's weights and EMA match the reference bitwise."""
    pairs = [(latentar.load(out / "model").state_dict(), latentar.load(reference / "model").state_dict())]
    pairs += [(load_file(out / "checkpoints" / NEWEST / name), load_file(reference / "checkpoints" / NEWEST / name))
              for name in ("model.safetensors", "ema.safetensors")]
    for mine, theirs in pairs:
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == \
        list(range(1, STEPS + 1))


def copy_run(reference: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    return out


# ---- kill points -------------------------------------------------------------------
@pytest.mark.parametrize("point", FAULT_POINTS)
def test_a_run_killed_while_writing_a_checkpoint_resumes_exactly(point, reference, tmp_path, monkeypatch):
    def hook(name: str, folder: Path) -> None:
        if name == point and folder.name.startswith(OLDER):
            raise Kill(f"{name} {folder.name}")

    monkeypatch.setattr(checkpoint, "fault_hook", hook)
    with pytest.raises(Kill, match=point):
        short_run(tmp_path)
    monkeypatch.setattr(checkpoint, "fault_hook", None)
    short_run(tmp_path, resume=True)
    assert_same_run(tmp_path, reference)
    assert not list((tmp_path / "checkpoints").glob("*.partial"))


def test_every_file_and_folder_is_fsynced_before_the_checkpoint_is_published(tmp_path, monkeypatch):
    synced: set[tuple[int, int]] = set()  # (device, inode): a rename keeps them
    fsync = checkpoint.os.fsync

    def recording_fsync(fd: int) -> None:
        synced.add(identity(os.fstat(fd)))
        fsync(fd)

    def identity(stat: os.stat_result) -> tuple[int, int]:
        return stat.st_dev, stat.st_ino

    seen = {}

    def hook(name: str, folder: Path) -> None:
        if name in ("before_rename", "after_rename"):
            seen[name] = {identity(p.stat()) for p in (folder, *folder.iterdir())}, set(synced)

    monkeypatch.setattr(checkpoint.os, "fsync", recording_fsync)
    monkeypatch.setattr(checkpoint, "fault_hook", hook)
    train(tmp_path, steps=1, save_every=1)
    published, before = seen["before_rename"]
    assert len(published) == len(FILES) + 2 and published <= before  # the files, the manifest, the folder
    assert identity((tmp_path / "checkpoints").stat()) in seen["after_rename"][1]  # the rename itself


# ---- planted payloads --------------------------------------------------------------
def plant(file: Path, marker: Path) -> None:
    """Replace ``file`` by a code-running pickle, in the format its loader expects."""
    if file.suffix in (".bin", ".pkl", ".pt"):
        torch.save(Payload(marker), file)
    else:
        file.write_bytes(pickle.dumps(Payload(marker)))


def test_the_payload_runs_code_when_unpickled(tmp_path):
    # the planted files are live: an unsafe load would create the marker
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("name", FILES)
def test_a_payload_in_a_checkpoint_file_runs_nothing_and_is_named(name, reference, tmp_path, capsys):
    out, marker = copy_run(reference, tmp_path), tmp_path / "ran"
    plant(out / "checkpoints" / NEWEST / name, marker)
    write_manifest(out / "checkpoints" / NEWEST)  # the hashes agree: only safe loading stops it
    short_run(out, resume=True)
    assert not marker.exists()
    err = capsys.readouterr().err
    assert f"{NEWEST} cannot be used: {name}" in err and f"older checkpoint {out / 'checkpoints' / OLDER}" in err
    assert_same_run(out, reference)


def test_payloads_in_every_file_of_every_checkpoint_end_in_an_error_naming_them(reference, tmp_path):
    out, marker = copy_run(reference, tmp_path), tmp_path / "ran"
    for folder in (out / "checkpoints").iterdir():
        for file in [*folder.iterdir(), folder / "custom_checkpoint_0.pkl"]:
            if file.name != "manifest.json":
                plant(file, marker)
        write_manifest(folder)
    with pytest.raises(CheckpointError, match=rf"{NEWEST}: custom_checkpoint_0.pkl is not a file.*{OLDER}: cus"):
        short_run(out, resume=True)
    for folder in (out / "checkpoints").iterdir():  # without the foreign file, the rest is tried too
        (folder / "custom_checkpoint_0.pkl").unlink()
        write_manifest(folder)
    with pytest.raises(CheckpointError, match="trainer_state.json is not valid JSON"):
        short_run(out, resume=True)
    assert not marker.exists()


# ---- damaged files -----------------------------------------------------------------
def flip_byte(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


def truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def lacks_rng_states(file: Path) -> None:
    torch.save({"step": 0}, file)


def unsettable_rng_state(file: Path) -> None:
    states = load(file, weights_only=True)
    torch.save({**states, "torch_manual_seed": torch.zeros(3)}, file)


def of_another_update(file: Path) -> None:
    file.write_text(json.dumps({**json.loads(file.read_text()), "step": 5}))


def drop_manifest(file: Path) -> None:
    (file.parent / "manifest.json").unlink()


def garble_manifest(file: Path) -> None:
    (file.parent / "manifest.json").write_text("{not json")


DAMAGES = [  # (file, damage, rewrite the manifest to match, the problem named)
    ("model.safetensors", flip_byte, False, "model.safetensors does not match its sha256"),
    ("optimizer.bin", truncate, False, "optimizer.bin has"),
    ("random_states_0.pkl", truncate, True, "random_states_0.pkl cannot be read"),
    ("random_states_0.pkl", lacks_rng_states, True, "random_states_0.pkl lacks the RNG states"),
    ("random_states_0.pkl", unsettable_rng_state, True, "random_states_0.pkl holds RNG states that cannot be set"),
    ("trainer_state.json", of_another_update, True, "trainer_state.json is of update 5"),
    ("model.safetensors", drop_manifest, False, "no manifest.json, so it cannot be verified"),
    ("model.safetensors", garble_manifest, False, "manifest.json is not a checkpoint manifest"),
]


@pytest.mark.parametrize("name, damage, rehash, problem", DAMAGES, ids=[d[1].__name__ + "-" + d[0] for d in DAMAGES])
def test_a_damaged_newest_checkpoint_is_named_and_the_older_one_is_used(name, damage, rehash, problem, reference,
                                                                         tmp_path, capsys):
    out = copy_run(reference, tmp_path)
    damage(out / "checkpoints" / NEWEST / name)
    if rehash:
        write_manifest(out / "checkpoints" / NEWEST)
    short_run(out, resume=True)
    err = capsys.readouterr().err
    assert f"checkpoint {out / 'checkpoints' / NEWEST} cannot be used" in err and problem in err
    assert f"resuming from the older checkpoint {out / 'checkpoints' / OLDER}" in err
    assert_same_run(out, reference)


# ---- links and special files in a run folder ------------------------------------------
def test_a_lock_that_is_a_link_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").symlink_to(victim)
    with pytest.raises(RunFolderError, match=r"\.lock is not a regular file"):
        short_run(out)
    assert victim.read_text() == "keep me"


def test_a_lock_that_is_a_hard_link_is_refused_and_its_other_name_untouched(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    out = tmp_path / "run"
    out.mkdir()
    os.link(victim, out / ".lock")
    with pytest.raises(RunFolderError, match=r"\.lock is not a regular file of its own"):
        short_run(out)
    assert victim.read_text() == "keep me"


def test_a_lock_that_is_a_fifo_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    os.mkfifo(out / ".lock")
    with pytest.raises(RunFolderError, match=r"\.lock is not a regular file"):
        short_run(out)


def test_an_output_that_is_a_link_is_refused_on_resume(reference, tmp_path):
    out, elsewhere = copy_run(reference, tmp_path), tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "metrics.jsonl").unlink()
    (out / "metrics.jsonl").symlink_to(elsewhere / "metrics.jsonl")
    with pytest.raises(RunFolderError, match="metrics.jsonl as symbolic link"):
        short_run(out, resume=True)
    assert not (elsewhere / "metrics.jsonl").exists()


@pytest.mark.parametrize("special", ["dev-zero", "fifo"])
def test_a_checkpoint_file_that_is_not_a_regular_file_is_skipped_without_reading_it(special, reference, tmp_path,
                                                                                    capsys):
    out = copy_run(reference, tmp_path)
    file = out / "checkpoints" / NEWEST / "optimizer.bin"
    file.unlink()
    file.symlink_to("/dev/zero") if special == "dev-zero" else os.mkfifo(file)
    short_run(out, resume=True)  # hashing /dev/zero or waiting on the FIFO would never end
    err = capsys.readouterr().err
    assert "optimizer.bin is not a regular file" in err and f"older checkpoint {out / 'checkpoints' / OLDER}" in err
    assert_same_run(out, reference)


def test_hashing_stops_past_the_recorded_size(tmp_path):
    file = tmp_path / "big.bin"
    file.write_bytes(bytes(10_000))
    assert checkpoint_files.file_digest(file, limit=100)["size"] == 101


def test_a_link_under_checkpoints_is_reported_and_never_pruned(reference, tmp_path, capsys):
    out, kept = copy_run(reference, tmp_path), tmp_path / "kept"
    kept.mkdir()
    (kept / "data.txt").write_text("mine")
    (out / "checkpoints" / "step_00000001").symlink_to(kept, target_is_directory=True)
    train(out, resume=True, steps=STEPS + 4, save_every=SAVE_EVERY)  # two more checkpoints, pruning each time
    assert (kept / "data.txt").read_text() == "mine" and (out / "checkpoints" / "step_00000001").is_symlink()
    assert "step_00000001 is not a checkpoint folder (a link or a file); it is left alone" in capsys.readouterr().err


# ---- deep, huge and torn files -------------------------------------------------------
def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_a_deeply_nested_manifest_falls_back_to_the_older_checkpoint(reference, tmp_path, capsys):
    out = copy_run(reference, tmp_path)
    (out / "checkpoints" / NEWEST / "manifest.json").write_text(deep_json(200_000))
    short_run(out, resume=True)
    err = capsys.readouterr().err
    assert "nested too deeply" in err and f"older checkpoint {out / 'checkpoints' / OLDER}" in err
    assert_same_run(out, reference)


def test_a_huge_manifest_is_not_read(reference, tmp_path, capsys):
    out = copy_run(reference, tmp_path)
    (out / "checkpoints" / NEWEST / "manifest.json").write_text(" " * (2 << 20) + "{}")
    short_run(out, resume=True)
    assert "larger than the 1048576 bytes" in capsys.readouterr().err
    assert_same_run(out, reference)


def test_a_torn_last_metrics_line_is_dropped_with_a_warning(reference, tmp_path):
    out = copy_run(reference, tmp_path)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "loss": 0.')  # a crash in the middle of a line
    with pytest.warns(UserWarning, match="the last line is torn"):
        short_run(out, resume=True)
    assert_same_run(out, reference)


def test_a_damaged_metrics_line_before_the_last_is_named(reference, tmp_path):
    out = copy_run(reference, tmp_path)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join(["{oops", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 1, is not a metrics record"):
        short_run(out, resume=True)


def test_a_resumed_run_logs_what_the_uninterrupted_one_logged(tmp_path, monkeypatch):
    """log_every > save_every: the window of losses since the last log line is carried over."""
    settings = dict(steps=8, save_every=2, log_every=4)
    train(tmp_path / "whole", **settings)

    def hook(name: str, folder: Path) -> None:
        if name == "after_rename" and folder.name == "step_00000006":
            raise Kill(name)

    monkeypatch.setattr(checkpoint, "fault_hook", hook)
    with pytest.raises(Kill):
        train(tmp_path / "cut", **settings)
    monkeypatch.setattr(checkpoint, "fault_hook", None)
    train(tmp_path / "cut", resume=True, **settings)
    losses = {name: [(r["step"], r.get("loss")) for r in map(json.loads, (tmp_path / name / "metrics.jsonl")
                                                                .read_text().splitlines())]
              for name in ("whole", "cut")}
    assert losses["cut"] == losses["whole"] and [s for s, _ in losses["whole"]] == [4, 8]


def test_an_old_trainer_state_without_a_window_still_loads():
    state = checkpoint_files.TrainerState.from_json({"format_version": 1, "step": 3, "nonfinite_streak": 0,
                                               "skipped_updates": 1})
    assert state == checkpoint_files.TrainerState(step=3, skipped_updates=1)
    with pytest.raises(checkpoint_files.DamagedCheckpoint, match="window must be"):
        checkpoint_files.TrainerState.from_json({**state.to_json(), "window": {"sums": {"loss": "x"}, "count": 1,
                                                                          "items": 2}})


# ---- a full disk -----------------------------------------------------------------------
def test_a_checkpoint_on_a_full_disk_is_a_write_error_and_the_older_ones_are_kept(small_disk, reference):
    disk, fill = small_disk
    out, filler = disk / "run", []

    def hook(name: str, folder: Path) -> None:
        if name == "after_rename" and folder.name == OLDER:
            filler.append(fill())

    checkpoint.fault_hook = hook
    try:
        with pytest.raises(WriteError, match=rf"cannot write {out / 'checkpoints' / NEWEST}\.partial: No space left"):
            short_run(out)
    finally:
        checkpoint.fault_hook = None
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002", OLDER]  # no .partial
    filler[0].unlink()
    short_run(out, resume=True)
    assert_same_run(out, reference)


def test_a_grid_on_a_full_disk_keeps_the_previous_grid(small_disk, tmp_path, capsys):
    disk, fill = small_disk
    model, grid = tmp_path / "prior", disk / "grid.png"
    tiny_prior("pixelcnn", (1, 4, 4), 2).save(model)
    assert cli.main(["sample", "--model", str(model), "-n", "4", "--out", str(grid)]) == 0
    before = grid.read_bytes()
    fill()
    assert cli.main(["sample", "--model", str(model), "-n", "64", "--seed", "1", "--out", str(grid)]) == 2
    assert f"latentar: error: cannot write {grid}: No space left on device" in capsys.readouterr().err
    assert grid.read_bytes() == before
    assert not [p for p in disk.iterdir() if p.name.endswith(".tmp")]

"""Owned run folders: one writer at a time (a lock that dies with its process), and a folder
holding another run's outputs is taken over only by a matching --resume or by --overwrite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

import latentar
from latentar.cli import main
from latentar.config import load_recipe, recipe_to_dict
from latentar.run_files import LOCK_FILE, RUN_FILE
from latentar.runs import recipe as recipe_runs
from latentar.training import TrainConfig, Trainer, prior_objective, read_metrics
from latentar.training.run_folder import FolderLock, RunFolderError


def grids(n: int = 16) -> TensorDataset:
    x = (torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(0)) < 0.5).to(torch.uint8)
    return TensorDataset(x, torch.zeros(n, dtype=torch.long))


def trainer(out: Path, prior: str = "pixelcnn", overwrite: bool = False, **config) -> Trainer:
    torch.manual_seed(0)
    model = latentar.build_prior(prior, (1, 4, 4), 2, preset="tiny")
    settings = {"steps": 2, "batch_size": 8, "log_every": 1, **config}
    return Trainer(model, prior_objective, grids(), TrainConfig(**settings), out, overwrite=overwrite)


# ---- the lock ----------------------------------------------------------------------
def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    lock = FolderLock(out)
    lock.acquire()
    with pytest.raises(RunFolderError, match=rf"{out} is in use by pid {os.getpid()} on "):
        trainer(out).fit()
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # refused before writing anything
    lock.release()
    assert not (out / LOCK_FILE).exists()
    trainer(out).fit()
    assert [r["step"] for r in read_metrics(out)] == [1, 2] and not (out / LOCK_FILE).exists()


HOLD_THEN_SLEEP = """
import sys, time
from latentar.training.run_folder import FolderLock
lock = FolderLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_the_lock_of_a_killed_process_does_not_block(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", HOLD_THEN_SLEEP, str(tmp_path)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=f"in use by pid {child.pid} on .*{LOCK_FILE}"):
            FolderLock(tmp_path).acquire()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert (tmp_path / LOCK_FILE).exists()  # left behind by the killed holder, and harmless
    lock = FolderLock(tmp_path)
    lock.acquire()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def test_a_file_is_not_a_run_folder(tmp_path):
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(RunFolderError, match="afile is a file; a run folder must be a folder"):
        trainer(tmp_path / "afile").fit()
    assert (tmp_path / "afile").read_text() == "mine"


# ---- ownership -----------------------------------------------------------------------
def test_foreign_outputs_without_checkpoints_need_overwrite(tmp_path):
    out = tmp_path / "run"
    latentar.build_prior("gated_pixelcnn", (1, 4, 4), 2, preset="tiny").save(out / "model")
    (out / "metrics.jsonl").write_text('{"step": 7, "loss": 1.0}\n')
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="already holds metrics.jsonl, model/ of an earlier run.*--resume"):
        trainer(out).fit()
    with pytest.raises(RunFolderError, match=f"no {RUN_FILE}, so nothing says which run made them.*--overwrite"):
        trainer(out).fit(resume=True)
    assert read_metrics(out)[0]["step"] == 7  # both refusals left the folder as it was
    trainer(out, overwrite=True).fit()
    assert latentar.load(out / "model").name == "pixelcnn"
    assert [r["step"] for r in read_metrics(out)] == [1, 2]
    assert (out / "notes.txt").read_text() == "mine"  # not a trainer's file: kept


def test_resume_with_another_run_names_the_differing_keys(tmp_path):
    trainer(tmp_path).fit()
    recorded = json.loads((tmp_path / RUN_FILE).read_text())
    assert recorded["model"]["name"] == "pixelcnn" and "steps" not in recorded["train"]
    with pytest.raises(RunFolderError, match="model.name is 'pixelcnn' there, you asked for 'gated_pixelcnn'"):
        trainer(tmp_path, prior="gated_pixelcnn").fit(resume=True)
    with pytest.raises(RunFolderError, match=r"train.lr is 0.001 there, you asked for 0.5"):
        trainer(tmp_path, lr=0.5).fit(resume=True)
    trainer(tmp_path, steps=3).fit(resume=True)  # a longer run is the same run
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]


def test_resume_and_overwrite_exclude_each_other(tmp_path):
    with pytest.raises(RunFolderError, match="resume and overwrite exclude each other"):
        trainer(tmp_path, overwrite=True).fit(resume=True)


def test_a_damaged_run_record_is_named(tmp_path):
    trainer(tmp_path).fit()
    (tmp_path / RUN_FILE).write_text("{not json")
    with pytest.raises(RunFolderError, match=f"{tmp_path / RUN_FILE} is damaged"):
        trainer(tmp_path).fit(resume=True)


# ---- several processes -------------------------------------------------------------
# One rank of a two-process gloo group, as torchrun would set it up: it claims HELD (which
# the test holds) and then FREE, and writes what it saw.
RANK = """
import json, os, sys
from pathlib import Path
rank, port, held, free = sys.argv[1:]
os.environ.update(RANK=rank, LOCAL_RANK=rank, WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
import torch
from accelerate import PartialState
from latentar.training.run_folder import RunFolderError, hold
state = PartialState(cpu=True)
try:
    hold(held, state)
    outcome = "claimed"
except RunFolderError as e:
    outcome = str(e)
lock = hold(free, state)
Path(free, f"rank{rank}.json").write_text(json.dumps({"held": outcome, "locked": lock.held}))
state.wait_for_everyone()
lock.release()
torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
def test_every_rank_raises_the_main_ranks_refusal(tmp_path, free_port):
    port = free_port
    held, free = tmp_path / "held", tmp_path / "free"
    lock = FolderLock(held)
    lock.acquire()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ranks = [subprocess.Popen([sys.executable, "-c", RANK, str(r), str(port), str(held), str(free)], env=env)
             for r in (0, 1)]
    try:
        assert [rank.wait(timeout=120) for rank in ranks] == [0, 0]  # neither rank hangs on the refusal
    finally:
        for rank in ranks:
            rank.kill()
        lock.release()
    seen = [json.loads((free / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert seen[0]["held"] == seen[1]["held"] and f"in use by pid {os.getpid()}" in seen[0]["held"]
    assert [r["locked"] for r in seen] == [True, False]  # only the main rank holds the lock


# ---- the command line ----------------------------------------------------------------
def train_prior(capsys, out: Path, image_folder: Path, *argv) -> tuple[int, str]:
    code = main(["train-prior", "--data", "image_folder", "--data-root", str(image_folder), "--preset", "tiny",
                 "--steps", "1", "--batch-size", "4", "--subset", "8", "--out", str(out), *map(str, argv)])
    return code, capsys.readouterr().err


def test_train_prior_refuses_a_held_folder_and_another_prior(capsys, tmp_path, image_folder):
    out = tmp_path / "run"
    lock = FolderLock(out)
    lock.acquire()
    code, err = train_prior(capsys, out, image_folder, "--prior", "pixelcnn")
    assert code == 2 and err.startswith("latentar: error: ") and f"in use by pid {os.getpid()}" in err
    lock.release()
    assert train_prior(capsys, out, image_folder, "--prior", "pixelcnn")[0] == 0
    code, err = train_prior(capsys, out, image_folder, "--prior", "gated_pixelcnn", "--resume")
    assert code == 2 and "model.name is 'pixelcnn' there, you asked for 'gated_pixelcnn'" in err
    assert train_prior(capsys, out, image_folder, "--prior", "gated_pixelcnn", "--overwrite")[0] == 0
    assert latentar.load(out / "model").name == "gated_pixelcnn"


RECIPE = Path(__file__).parent.parent / "recipes" / "binarized-mnist-pixelcnn.toml"  # never trained here


def test_latentar_run_refuses_a_folder_a_live_run_holds(capsys, tmp_path):
    lock = FolderLock(tmp_path)
    lock.acquire()
    try:
        code = main(["run", str(RECIPE), "--out", str(tmp_path)])
    finally:
        lock.release()
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("latentar: error: ") and f"in use by pid {os.getpid()}" in err


def test_latentar_run_overwrite_removes_only_what_a_run_wrote(tmp_path, monkeypatch):
    for name in ("recipe.json", "summary.json", "samples.png", "prior/done.json", "codes/manifest.json",
                 "notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("earlier")
    seen = {}
    monkeypatch.setattr(recipe_runs, "run_stages", lambda recipe, plan, out, state, *data, **kw: seen.update(
        names=sorted(p.name for p in out.iterdir()), locked=(out / LOCK_FILE).exists()))
    recipe_runs.run_recipe(load_recipe(RECIPE), tmp_path, overwrite=True)
    assert seen == {"names": [LOCK_FILE, "notes.txt"], "locked": True}


def test_train_vqvae_replaces_a_foreign_run_only_with_overwrite(capsys, tmp_path, image_folder):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 9, "loss": 1.0}\n')
    argv = ["train-vqvae", "--data", "image_folder", "--data-root", str(image_folder), "--preset", "tiny",
            "--steps", "1", "--batch-size", "4", "--subset", "8", "--out", str(out)]
    assert main(argv) == 2 and "already holds metrics.jsonl of an earlier run" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert [r["step"] for r in read_metrics(out)] == [1]


def test_latentar_run_refuses_a_stage_folder_that_is_a_link(tmp_path):
    outside, out = tmp_path / "outside", tmp_path / "run"
    outside.mkdir()
    out.mkdir()
    (out / "prior").symlink_to(outside, target_is_directory=True)
    with pytest.raises(RunFolderError, match="prior as symbolic link"):
        recipe_runs.run_recipe(load_recipe(RECIPE), out)
    assert not any(outside.iterdir())


def test_a_recorded_recipe_that_predates_a_setting_reads_it_as_its_default(tmp_path):
    recipe = load_recipe(RECIPE)
    recorded = recipe_to_dict(recipe)
    del recorded["prior_train"]["keep_checkpoints"]  # written before the setting existed
    (tmp_path / "recipe.json").write_text(json.dumps(recorded))
    (tmp_path / "prior").mkdir()
    recipe_runs.check_previous_run(tmp_path, recipe)  # the same recipe: the stage is reused
    changed = recipe_to_dict(recipe)
    changed["prior_train"]["lr"] = 0.5
    (tmp_path / "recipe.json").write_text(json.dumps(changed))
    with pytest.raises(ValueError, match="made by another recipe"):
        recipe_runs.check_previous_run(tmp_path, recipe)


def test_a_recorded_no_precision_matches_accelerates_setting_when_that_is_no(tmp_path, monkeypatch):
    recipe = load_recipe(RECIPE)  # mixed_precision unset: Accelerate's setting
    recorded = recipe_to_dict(recipe)
    recorded["prior_train"]["mixed_precision"] = "no"  # the default an older latentar wrote down
    (tmp_path / "recipe.json").write_text(json.dumps(recorded))
    (tmp_path / "prior").mkdir()
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    recipe_runs.check_previous_run(tmp_path, recipe)  # Accelerate's setting is "no": the same precision
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    with pytest.raises(ValueError, match="prior_train.mixed_precision"):
        recipe_runs.check_previous_run(tmp_path, recipe)

"""Training options a user meets in the first week: the mixed precision Accelerate is set to,
Adam or AdamW with their hyper-parameters, the trackers' project and run names, run folders that
predate a setting, --test-limit, and run-folder locks that import where fcntl does not."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from prior_cases import binary_grids, tiny_pixelcnn

from latentar import cli
from latentar.run_files import RUN_FILE
from latentar.training import TrainConfig, Trainer, prior_objective
from latentar.training.optimizers import make_optimizer
from latentar.training.run_folder import RunFolderError
from latentar.training.tracking import start_trackers, tracker_names


def trainer(out: Path, **settings) -> Trainer:
    return Trainer(tiny_pixelcnn(), prior_objective, binary_grids(), TrainConfig(**{"batch_size": 8, **settings}), out)


# ---- mixed precision: Accelerate's setting unless one is given --------------------------
def test_the_default_mixed_precision_is_accelerates_and_a_given_one_wins(tmp_path, device, monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` sets
    taken = trainer(tmp_path / "default", steps=1)
    assert taken.accelerator.mixed_precision == "bf16" and taken.config.mixed_precision == "bf16"
    taken.fit()
    assert json.loads((tmp_path / "default" / RUN_FILE).read_text())["train"]["mixed_precision"] == "bf16"
    given = trainer(tmp_path / "given", steps=1, mixed_precision="no")
    assert given.accelerator.mixed_precision == "no"


def test_fp16_set_through_accelerate_is_refused_on_a_cpu(tmp_path, device, monkeypatch):
    if device.type != "cpu":
        pytest.skip("fp16 autocast works on a GPU")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    with pytest.raises(ValueError, match=r"'fp16' \(Accelerate's setting.*cannot be used on a CPU"):
        trainer(tmp_path, steps=1)


# ---- the optimizer ---------------------------------------------------------------------
@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_the_trainer_builds_the_optimizer_asked_for(tmp_path, name, cls):
    built = trainer(tmp_path, optimizer=name, lr=0.02, weight_decay=0.1, beta1=0.8, beta2=0.95).optimizer.optimizer
    assert type(built) is cls
    group = built.param_groups[0]
    assert group["lr"] == 0.02 and group["weight_decay"] == 0.1 and group["betas"] == (0.8, 0.95)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_weight_decay_moves_weights_that_have_no_gradient(name):
    weight = torch.nn.Parameter(torch.full((3,), 2.0))
    optimizer = make_optimizer([weight], TrainConfig(optimizer=name, lr=0.1, weight_decay=0.5))
    weight.grad = torch.zeros(3)
    optimizer.step()
    # AdamW shrinks the weight by lr·weight_decay; Adam adds weight_decay·weight to the gradient,
    # whose normalised step is lr (1 − 1e-8 from Adam's eps)
    expected = 2.0 * (1 - 0.1 * 0.5) if name == "adamw" else 2.0 - 0.1
    assert weight.detach() == pytest.approx(torch.full((3,), expected), abs=1e-6)
    unchanged = torch.nn.Parameter(torch.full((3,), 2.0))
    plain = make_optimizer([unchanged], TrainConfig(optimizer=name, lr=0.1))
    unchanged.grad = torch.zeros(3)
    plain.step()
    assert torch.equal(unchanged.detach(), torch.full((3,), 2.0))


@pytest.mark.parametrize("settings, message", [
    (dict(optimizer="sgd"), "TrainConfig.optimizer must be one of ('adam', 'adamw'), got 'sgd'"),
    (dict(weight_decay=-0.1), "TrainConfig.weight_decay must be a number >= 0"),
    (dict(beta1=1.0), "TrainConfig.beta1 must be a number in [0, 1)"),
    (dict(beta2=float("nan")), "TrainConfig.beta2 must be a finite number"),
    (dict(tracker_project=" "), "TrainConfig.tracker_project must be a non-empty string or None"),
    (dict(mixed_precision="fp8"), "TrainConfig.mixed_precision must be one of ('no', 'fp16', 'bf16')"),
])
def test_bad_training_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=rf"^{re.escape(message)}"):
        TrainConfig(**settings)


# ---- run folders that predate a setting ------------------------------------------------
NEW_SETTINGS = ("optimizer", "weight_decay", "beta1", "beta2")


def test_a_run_that_predates_a_setting_resumes_with_its_default_and_refuses_another(tmp_path):
    trainer(tmp_path, steps=2, save_every=1).fit()
    recorded = json.loads((tmp_path / RUN_FILE).read_text())
    for name in NEW_SETTINGS:
        del recorded["train"][name]  # as an older latentar wrote it
    (tmp_path / RUN_FILE).write_text(json.dumps(recorded))
    with pytest.raises(RunFolderError, match=r"train\.optimizer is 'adam' there, you asked for 'adamw'"):
        trainer(tmp_path, steps=3, save_every=1, optimizer="adamw").fit(resume=True)
    with pytest.raises(RunFolderError, match=r"train\.weight_decay is 0\.0 there, you asked for 0\.1"):
        trainer(tmp_path, steps=3, save_every=1, weight_decay=0.1).fit(resume=True)
    assert trainer(tmp_path, steps=3, save_every=1).fit(resume=True)["step"] == 3


# ---- trackers: project and run names -----------------------------------------------------
class FakeTracker(SimpleNamespace):
    def store_init_configuration(self, config):
        self.config = config


class FakeAccelerator(SimpleNamespace):
    """What start_trackers uses of an Accelerator: log_with, project_dir, init_trackers (recorded) and
    the trackers it started (W&B's gets the hyper-parameters as its configuration)."""

    def init_trackers(self, project_name, config=None, init_kwargs=None):
        self.trackers = [FakeTracker(name=name) for name in self.log_with]
        self.started = {"project": project_name, "init_kwargs": init_kwargs}


@pytest.mark.parametrize("settings, env, project, name", [
    ({}, {}, "latentar", "run-7"),
    ({}, {"WANDB_PROJECT": "from-env"}, "from-env", "run-7"),
    ({"tracker_project": "mine", "tracker_run_name": "first"}, {"WANDB_PROJECT": "from-env"}, "mine", "first"),
])
def test_trackers_get_the_project_and_run_name(tmp_path, monkeypatch, settings, env, project, name):
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    for key, value in {**env, "WANDB_ENTITY": "team"}.items():
        monkeypatch.setenv(key, value)
    accelerator = FakeAccelerator(log_with=["wandb", "tensorboard"], project_dir=str(tmp_path / "run-7"))
    start_trackers(accelerator, tiny_pixelcnn(), TrainConfig(**settings), resumed_at=4)
    assert accelerator.started["project"] == project
    assert accelerator.started["init_kwargs"] == {"wandb": {"name": name, "dir": str(tmp_path / "run-7")},
                                                  "tensorboard": {"purge_step": 5}}  # W&B reads WANDB_ENTITY itself
    wandb = next(tracker for tracker in accelerator.trackers if tracker.name == "wandb")
    assert wandb.config["train.tracker_project"] == settings.get("tracker_project", "none")
    assert tracker_names(TrainConfig(**settings), tmp_path / "run-7") == (project, name)


def test_tracker_names_may_change_on_resume(tmp_path):
    trainer(tmp_path, steps=1).fit()
    trainer(tmp_path, steps=2, tracker_project="renamed", tracker_run_name="again").fit(resume=True)
    assert json.loads((tmp_path / RUN_FILE).read_text())["train"].get("tracker_project") is None  # not recorded


# ---- --test-limit ----------------------------------------------------------------------
@pytest.mark.parametrize("command, arch", [("train-prior", ["--prior", "pixelcnn", "--preset", "tiny"]),
                                           ("train-vqvae", ["--arch", "hidden=8", "res_blocks=0", "codebook_size=4"])])
def test_test_limit_scores_the_first_test_images_only(capsys, tmp_path, image_folder, command, arch):
    code = cli.main([command, "--data", "image_folder", "--data-root", str(image_folder), *arch, "--steps", "1",
                     "--batch-size", "4", "--subset", "8", "--test-limit", "3", "--out", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["test"]["count"] == 3


# ---- locks where fcntl does not exist ----------------------------------------------------
def test_latentar_imports_and_locks_without_fcntl(tmp_path):
    script = ("import sys; sys.modules['fcntl'] = None\n"  # as on Windows
              "import latentar, latentar.cli\n"
              "from latentar.training.run_folder import FolderLock\n"
              f"FolderLock({str(tmp_path)!r})\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]

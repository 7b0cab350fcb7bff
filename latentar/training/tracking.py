"""Experiment trackers through Accelerate: TensorBoard, Weights & Biases, or both.

    Accelerator(**accelerator_options(config.report_to, out_dir))
    start_trackers(accelerator, model, config, resumed_at=step)
    log_record(accelerator, {"step": 100, "loss": 0.9, "lr": 1e-3, "eval": {"bits_per_dim": 1.2}})
    log_image(accelerator, "samples", grid, step=100)    # grid: uint8 (C, H, W)
    log_hparams(accelerator, model, config, final_scores)
    end_trackers(accelerator)

``report_to`` is "none" (no tracker), "tensorboard", "wandb" or "all" (both). TensorBoard
writes event files under ``RUN/logs/PROJECT/``; W&B runs in project PROJECT under the run's name,
with its files in the run folder (``tracker_names``). PROJECT is ``config.tracker_project``, else
``WANDB_PROJECT`` when set, else "latentar"; the run's name is ``config.tracker_run_name``, else
the run folder's name. W&B reads ``WANDB_ENTITY`` (and its other variables) itself.
``metrics.jsonl`` stays the record of a run: every line of it is logged with the same names,
nested keys joined by "/" (``eval/bits_per_dim``), the final evaluation (its last line, ``done.json``'s)
included. TensorBoard's HParams get the run's hyper-parameters when it ends, with the final test
scores as their metrics (``eval/NAME``: the last point of each evaluation series); W&B gets the
hyper-parameters as its config at the start.
A resumed run appends to the same TensorBoard folder: its writer purges the events after the
checkpoint it resumed from, so the series continues at the right step without doubles.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from einops import rearrange

from latentar.run_files import LOGS_DIR
from latentar.saving import Saveable
from latentar.training.config import REPORT_TO, TrainConfig

# tracker -> (its package, how to install it)
TRACKERS = {"tensorboard": ("tensorboard", 'pip install -e ".[tensorboard]"  (or: pip install tensorboard)'),
            "wandb": ("wandb", 'pip install "latentar[wandb]"  (or: pip install wandb)')}
PROJECT = "latentar"  # TensorBoard's sub-folder of logs/ and W&B's project, unless set otherwise
PROJECT_VARIABLE = "WANDB_PROJECT"  # read when TrainConfig.tracker_project is None


class TrackerNotInstalledError(ImportError, ValueError):
    """``report_to`` names a tracker whose package is not installed."""


def trackers(report_to: str) -> list[str]:
    """The trackers ``report_to`` asks for, each checked to be installed."""
    if report_to not in REPORT_TO:
        raise ValueError(f"report_to must be one of {REPORT_TO}, got {report_to!r}")
    names = list(TRACKERS) if report_to == "all" else [] if report_to == "none" else [report_to]
    for name in names:
        package, install = TRACKERS[name]
        if importlib.util.find_spec(package) is None:
            raise TrackerNotInstalledError(f"report_to={report_to!r} needs the {package} package, which is not "
                                           f"installed: {install}")
    return names


def accelerator_options(report_to: str, out_dir: str | Path) -> dict:
    """The keyword arguments of ``Accelerator`` for the trackers of ``report_to``, logging into
    ``out_dir/logs``."""
    out_dir = Path(out_dir)
    project = ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(out_dir / LOGS_DIR))
    return {"log_with": trackers(report_to) or None, "project_config": project}


def start_trackers(accelerator: Accelerator, model: Saveable, config: TrainConfig, *, resumed_at: int = 0) -> None:
    """Start the trackers, W&B with the run's hyper-parameters (`run_hyperparameters`; TensorBoard
    gets them with the final scores, `log_hparams`). A run resumed at update ``resumed_at`` > 0
    drops the events its crashed predecessor wrote after that update."""
    if not accelerator.log_with:
        return
    out_dir = Path(accelerator.project_dir)
    project, name = tracker_names(config, out_dir)
    init: dict[str, dict[str, Any]] = {"wandb": {"name": name, "dir": str(out_dir)}}
    if resumed_at:
        init["tensorboard"] = {"purge_step": resumed_at + 1}
    accelerator.init_trackers(project, init_kwargs=init)
    for tracker in accelerator.trackers:
        if tracker.name != "tensorboard":
            tracker.store_init_configuration(run_hyperparameters(model, config))


def log_hparams(accelerator: Accelerator, model: Saveable, config: TrainConfig, scores: dict) -> None:
    """TensorBoard's HParams of a finished run: its hyper-parameters, with the final test
    ``scores`` as the metrics (``eval/NAME``, the series whose last point is the final evaluation)."""
    boards = [tracker.writer for tracker in accelerator.trackers if tracker.name == "tensorboard"]
    if not boards:
        return
    from torch.utils.tensorboard.summary import hparams  # needs the tensorboard package: imported when used

    for writer in boards:
        for summary in hparams(run_hyperparameters(model, config), scalars({"eval": scores})):
            writer.file_writer.add_summary(summary)
        writer.flush()


def run_hyperparameters(model: Saveable, config: TrainConfig) -> dict[str, bool | int | float | str]:
    """The model's config and the training settings, flat: {"model.arch.hidden": 64, "train.lr": 0.001, ...}."""
    return hyperparameters({"model_type": model.model_type, "model": model.config_dict(), "train": asdict(config)})


def tracker_names(config: TrainConfig, out_dir: str | Path) -> tuple[str, str]:
    """(project, run name) of a run in ``out_dir``: ``config.tracker_project``, else $WANDB_PROJECT,
    else "latentar"; ``config.tracker_run_name``, else the run folder's name."""
    project = config.tracker_project or os.environ.get(PROJECT_VARIABLE) or PROJECT
    return project, config.tracker_run_name or Path(out_dir).resolve().name


def hyperparameters(config: dict, prefix: str = "") -> dict[str, bool | int | float | str]:
    """Nested ``config`` -> {"train.lr": 0.001, "model.preset": "small", ...}: scalars kept,
    None as "none", lists and tuples as their JSON text."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(hyperparameters(value, f"{name}."))
        elif value is None:
            flat[name] = "none"
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat


def scalars(record: dict, prefix: str = "") -> dict[str, float]:
    """A metrics.jsonl record -> its numbers by name, nested keys joined by "/" ("step" left out)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(scalars(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and name != "step":
            out[name] = float(value)
    return out


def log_record(accelerator: Accelerator, record: dict) -> None:
    """Log one metrics.jsonl record (it has a "step") to every tracker."""
    if accelerator.trackers:
        accelerator.log(scalars(record), step=record["step"])


def log_image(accelerator: Accelerator, name: str, grid: torch.Tensor, *, step: int) -> None:
    """Log one image, uint8 (C, H, W) with C = 1 or 3, to every tracker."""
    image = rearrange(grid.cpu(), "c h w -> 1 h w c").numpy()  # (1, H, W, C)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({name: image}, step=step, dataformats="NHWC")
        else:  # W&B takes a list of images
            tracker.log_images({name: list(np.ascontiguousarray(image))}, step=step)


def end_trackers(accelerator: Accelerator) -> None:
    """Finish every tracker (flush and close its files). This is ``Accelerator.end_training``
    without its last act, which would destroy the process group the next stage of a recipe
    still needs."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers.clear()

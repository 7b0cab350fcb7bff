"""The name of every file and folder latentar writes into a run folder, and the readers of
what a finished stage left there. Every module that reads or writes a run folder takes the
names from here.

A stage folder (``train-prior --out``, ``train-vqvae --out``, or a stage of ``latentar run``)::

    metrics.jsonl          one JSON line per logged update (the trainer; `read_metrics`)
    checkpoints/           the newest two resume checkpoints (latentar.training.checkpoint)
    samples/               with ``sample_every``: samples/step_NNNNNNNN.png, the trainer's previews
    logs/                  the trackers' files (latentar.training.tracking)
    model/                 the exported model: config.json + model.safetensors + README.md (its card),
                           and for a code prior codes_source.json (the VQ-VAE of its codes; `read_codes_source`)
    done.json              written last by the trainer: the stage finished (`read_done`)
    run.json, .lock        what trains there, and who does (latentar.training.run_folder)
    summary.json           the stage record (latentar.runs.summary); a code folder of
                           ``latentar encode`` holds one too, beside its manifest.json
    reconstructions.png    train-vqvae: test images above their reconstructions
    timing.json            only in stages of runs written before summary format 2 (read, never written)

A recipe run folder (``latentar run --out``)::

    recipe.json            the resolved recipe
    summary.json           the run's summary: a stage record per stage
    codes/, vqvae/, prior/, bottom_prior/   the stages
    samples.png, reconstructions.png, curves.png
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from latentar.files import BadFileError, open_regular, read_json
from latentar.saving import CONFIG_FILE, MODEL_DIR

# a stage folder
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
SAMPLES_DIR = "samples"
LOGS_DIR = "logs"
CODES_SOURCE_FILE = "codes_source.json"  # in a code prior's model folder: the VQ-VAE its codes came from
DONE_FILE = "done.json"
RUN_FILE = "run.json"
LOCK_FILE = ".lock"
SUMMARY_FILE = "summary.json"
RECONSTRUCTIONS_FILE = "reconstructions.png"
TIMING_FILE = "timing.json"  # {"wall_time_s": ...} of a recipe stage, in run folders of summary format 1
# a recipe run folder (besides summary.json and reconstructions.png)
RECIPE_FILE = "recipe.json"
CODES_DIR = "codes"
SAMPLES_FILE = "samples.png"
CURVES_FILE = "curves.png"


def read_done(folder: str | Path) -> dict | None:
    """The final metrics of a finished stage (done.json + an exported model), or None:
    {"step", "train": the last logged metrics, "eval": the final evaluation}."""
    folder = Path(folder)
    if not (folder / DONE_FILE).is_file() or not (folder / MODEL_DIR / CONFIG_FILE).is_file():
        return None
    return read_json(folder / DONE_FILE)


def read_codes_source(model_folder: str | os.PathLike) -> dict | None:
    """What a code prior's model folder records of its codes, or None (a pixel prior, or none recorded):
    {"vqvae_fingerprint": the VQ-VAE (or palette) that made them, "level": "codes", "top" or "bottom",
    "tokenizer": "vqvae" or "palette" (absent from older folders: "vqvae")}."""
    return read_if_present(Path(model_folder) / CODES_SOURCE_FILE)


def read_metrics(folder: str | Path, up_to: int | None = None) -> list[dict]:
    """The records of metrics.jsonl (those with step <= ``up_to`` when given). A torn last
    line (a crash while it was written) is dropped with a warning; any other line that is not
    a record is a ``BadFileError`` naming the file and the line."""
    path = Path(folder) / METRICS_FILE
    if not os.path.lexists(path):
        return []
    with open_regular(path) as f:
        lines = f.read().decode("utf-8", errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or type(record.get("step")) is not int:
                raise ValueError("a JSON object with an integer step expected")
        except (ValueError, RecursionError) as e:
            if number < len(lines):
                raise BadFileError(f"{path}, line {number}, is not a metrics record ({e})") from e
            warnings.warn(f"{path}: the last line is torn (a crash while it was written); it is dropped",
                          stacklevel=2)
            break
        records.append(record)
    return [r for r in records if up_to is None or r["step"] <= up_to]


def read_if_present(path: Path) -> dict | None:
    """The JSON file ``path`` of a run folder, or None where there is none."""
    return read_json(path) if path.is_file() else None

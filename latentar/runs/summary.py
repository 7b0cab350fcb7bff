"""Stage records: the one way every stage of every run is summarised (``summary.json``, format 4).

A **stage record** says what one stage made and how well it scores. ``train-prior``,
``train-vqvae`` and ``encode`` write theirs as their folder's ``summary.json``; ``latentar run``
writes one into each stage folder it trains and gathers them into the run's ``summary.json``::

    format        4
    stage         "vqvae", "palette", "codes" or "prior"
    data          the dataset's name (train-prior on code grids: the code folder)
    wall_time_s   seconds the run that made the stage spent on it (0 for a recipe's vqvae.path)
  a VQ-VAE or a prior adds
    reused        true when this run took the stage as it found it (a finished stage, vqvae.path)
    parameters    the model's parameters
    steps, train_items, train   optimizer updates, training items, the last logged training metrics
                  (absent for vqvae.path, which this run did not train)
    test          the test split's scores: `evaluate_prior`'s (nats, dims, count, nats_per_image,
                  bits_per_dim or bits_per_code) or `evaluate_vqvae`'s (mse, psnr, count,
                  perplexity, codes_used; per level when hierarchical). A prior's bits per symbol
                  have one name in ``train`` and ``test`` (`latentar.evaluation.bits_name`):
                  bits_per_code for a code prior, bits_per_dim for a pixel prior. nats_per_image
                  is per item of the split: a code prior's is the nats of one image's code grid,
                  not comparable with a pixel prior's nats per image
    ...           the same scores at the top level too, where recipe summaries always had them
  a prior adds    prior (its name), preset, head, head_options, class_conditional, embed_dim,
                  class_dropout, arch (its `PriorConfig`), ema (whether it kept EMA weights)
  a VQ-VAE adds   image_shape, vqvae (its `VQVAEConfig`), grids ({level: [h, w]}), fingerprint;
                  path, for vqvae.path
  a palette adds  the same, with palette (its `PaletteConfig`) for vqvae; steps 0 and no train: it is
                  fitted (`palette_stage`); its test scores are a VQ-VAE's (psnr, perplexity, codes_used)
  codes add       folder, vqvae_fingerprint, grids and counts (the manifest's, {split: items})

A **run summary** (``latentar run``) is the run's facts plus a stage record per stage::

    format, mode ("codes" or "pixels"), data, image_shape (C, H, W)
    vqvae or palette, codes, prior, bottom_prior     the stage records the recipe has
    images                                {"samples": path, "reconstructions": path, "wall_time_s"}
    metrics                               [metrics] n > 0: the sample metrics (`latentar.runs.metrics`):
                                          features, n, reference, reference_n, classifier (when the run
                                          trained it), samples, reconstructions (code mode), wall_time_s
    wall_time_s, num_processes

`read_summary` reads any run folder as format 4: summaries written before and stage folders
with only the trainer's ``done.json`` are brought to it. Format 3 had no ``metrics``. Format 2 also held a run's
``code_bits_per_pixel_dim`` (dropped: a code grid's bits spread over the image's pixels, which no
pixel model's bits/dim can be compared with) and logged a code prior's training bits per code as
``bits_per_dim`` (renamed); format 1 had no ``format`` key and flat stage entries.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import latentar.priors  # noqa: F401  (registers the priors, so their folders can be read)
from latentar.config import PriorConfig
from latentar.registry import MODELS
from latentar.run_files import DONE_FILE, MODEL_DIR, RECIPE_FILE, SUMMARY_FILE, TIMING_FILE, read_done, read_if_present
from latentar.saving import meta_model, read_config
from latentar.training import TrainConfig
from latentar.vqvae import Tokenizer

FORMAT = 4
# a run's stage -> its kind
STAGES = {"vqvae": "vqvae", "palette": "palette", "codes": "codes", "prior": "prior", "bottom_prior": "prior"}
RUN_KEYS = ("steps", "reused", "wall_time_s", "path", "folder")  # format 1: a run's stage entry, less its scores


def stage_record(stage: str, data: str, model: Any, result: dict, *, train_items: int, reused: bool,
                 wall_time_s: float | None, **description) -> dict:
    """The record of a trained (or reused) VQ-VAE or prior stage: ``result`` is the trainer's
    (done.json: step, train, eval); ``description`` says what the model is (`prior_description`,
    `vqvae_description`)."""
    return {"format": FORMAT, "stage": stage, "data": data, **description, "reused": reused,
            "parameters": sum(p.numel() for p in model.parameters()), "steps": result["step"],
            "train_items": train_items, "train": train_metrics(result["train"], result["eval"]),
            "test": result["eval"], **result["eval"], "wall_time_s": wall_time_s}


def train_metrics(train: dict, test: dict) -> dict:
    """The last logged training metrics, a prior's bits per symbol named as its test score names
    them: runs of summary format 2 and before logged a code prior's bits per code as bits_per_dim."""
    if "bits_per_code" in test and "bits_per_dim" in train:
        return {("bits_per_code" if key == "bits_per_dim" else key): value for key, value in train.items()}
    return train


def prior_description(config: PriorConfig, train: TrainConfig) -> dict:
    """What a prior stage trains: its `PriorConfig` (``name`` as ``prior``) and whether it keeps EMA weights."""
    settings = asdict(config)
    return {"prior": settings.pop("name"), **settings, "ema": train.ema_decay is not None}


def vqvae_description(vqvae: Tokenizer) -> dict:
    """What a VQ-VAE (or palette) stage made: its image shape, config (under "vqvae" or "palette"), code
    grids and fingerprint."""
    return {"image_shape": list(vqvae.image_shape), vqvae.model_type: asdict(vqvae.config),
            "grids": {level: list(shape) for level, shape in vqvae.grid_shapes.items()},
            "fingerprint": vqvae.fingerprint()}


def recorded_wall_time(folder: Path) -> float | None:
    """The wall time a finished stage's own run recorded (summary.json, or format 1's timing.json)."""
    for name in (SUMMARY_FILE, TIMING_FILE):
        recorded = read_if_present(folder / name)
        if recorded is not None:
            return recorded.get("wall_time_s")
    return None


# ---- reading any run folder as format 4 --------------------------------------------------
def read_summary(folder: str | Path) -> dict:
    """The summary of a run folder, in format 4: a stage record, or a run summary."""
    folder = Path(folder)
    summary = read_if_present(folder / SUMMARY_FILE)
    if summary is None:
        return done_record(folder)
    if summary.get("format") == FORMAT:
        return summary
    if summary.get("format") == 3:  # the same records, without sample metrics
        return upgrade_format_3(summary)
    if summary.get("format") == 2:
        return upgrade_format_2(summary)
    if "mode" in summary:  # a format-1 `latentar run`: stage entries of flat scores, names in recipe.json
        recipe = read_if_present(folder / RECIPE_FILE) or {}
        stages = {name: upgrade_entry(folder / name, name, summary[name], recipe.get(name) or {})
                  for name in STAGES if name in summary}
        return upgrade_format_2({**summary, **stages})
    kind = "prior" if isinstance(summary.get("prior"), str) else "vqvae"  # format 1's train-prior, train-vqvae
    return upgrade_format_2({**summary.get("test", {}), **summary, "stage": kind, "reused": False})


def upgrade_format_3(summary: dict) -> dict:
    """A format-3 summary (a stage record or a run summary) in format 4: only the format changes."""
    if "stage" in summary:
        return {**summary, "format": FORMAT}
    return {**summary, **{name: {**summary[name], "format": FORMAT} for name in STAGES if name in summary},
            "format": FORMAT}


def upgrade_format_2(summary: dict) -> dict:
    """A format-2 summary (a stage record or a run summary) in format 4."""
    def record(stage: dict) -> dict:
        train = {"train": train_metrics(stage["train"], stage.get("test", {}))} if "train" in stage else {}
        return {**stage, **train, "format": FORMAT}

    if "stage" in summary:
        return record(summary)
    run = {key: value for key, value in summary.items() if key != "code_bits_per_pixel_dim"}
    return {**run, **{name: record(run[name]) for name in STAGES if name in run}, "format": FORMAT}


def stage_records(summary: dict) -> list[dict]:
    """The stage records of a format-4 summary: itself, or a run summary's, in stage order."""
    return [summary] if "stage" in summary else [summary[name] for name in STAGES if name in summary]


def upgrade_entry(folder: Path, name: str, entry: dict, section: dict) -> dict:
    """A format-1 run's stage entry (its scores, steps, reused, wall_time_s) as a stage record;
    ``section`` is the stage's recipe section (a prior's name and preset)."""
    record = {**entry, "format": FORMAT, "stage": STAGES[name],
              "test": {k: v for k, v in entry.items() if k not in RUN_KEYS}}
    if record["stage"] == "prior":
        record.update(prior=section.get("name"), preset=section.get("preset"),
                      parameters=parameter_count(folder / MODEL_DIR))
    return record


def done_record(folder: Path) -> dict:
    """The stage record of a folder that holds only what the trainer wrote (done.json, model/)."""
    done = read_done(folder)
    if done is None:
        raise FileNotFoundError(f"{folder} holds neither {SUMMARY_FILE} nor {DONE_FILE}: expected the folder of a "
                                "finished `latentar run`, `train-prior` or `train-vqvae`")
    config = read_config(folder / MODEL_DIR)
    record = {"format": FORMAT, "stage": config["model_type"], "data": None, "reused": False,
              "parameters": parameter_count(folder / MODEL_DIR), "steps": done["step"],
              "train": train_metrics(done["train"], done["eval"]),
              "test": done["eval"], **done["eval"], "wall_time_s": recorded_wall_time(folder)}
    if record["stage"] == "prior":
        record["prior"] = config["config"]["name"]
    return record


def parameter_count(model_folder: Path) -> int:
    """The parameters of the model saved in ``model_folder``, counted on the meta device (no weights read)."""
    config = read_config(model_folder)
    model = meta_model(lambda: MODELS.get(config["model_type"]).from_config(config["config"]), str(model_folder))
    return sum(p.numel() for p in model.parameters())

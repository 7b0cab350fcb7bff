"""Runs side by side: one row per run folder, from the files the runs leave behind.

    rows = [run_row(folder) for folder in ["runs/main", "runs/bmnist"]]
    print(markdown_table(rows))

A row reads a `latentar run` folder (``summary.json`` + ``recipe.json``), a ``train-prior``
or ``train-vqvae`` folder (``summary.json``), or any trainer's folder (``done.json`` +
``model/``). Its columns are ``COLUMNS``; a value a run does not have is None. In a
two-stage run the row is about the prior(s): parameters and updates are the priors', the
test scores add up the stages (nats per image summed, bits = total nats over total
symbols), the wall time adds up the stages, and the VQ-VAE gives PSNR and code usage.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import latentar.priors  # noqa: F401  (registers the priors, so their folders can be read)
import latentar.vqvae  # noqa: F401  (registers the VQ-VAE)
from latentar.files import read_json
from latentar.pipeline import RECIPE_FILE, TIMING_FILE
from latentar.registry import MODELS
from latentar.runs import SUMMARY_FILE
from latentar.saving import meta_model, read_config
from latentar.training.trainer import DONE_FILE, MODEL_DIR

# column -> (header, how a value is shown)
COLUMNS = {
    "run": ("run", "{}"), "data": ("data", "{}"), "prior": ("prior", "{}"), "preset": ("preset", "{}"),
    "parameters": ("parameters", "{:,}"), "updates": ("updates", "{}"), "wall_time_s": ("wall time (s)", "{:.0f}"),
    "nats_per_image": ("test nats/image", "{:.2f}"), "bits_per_dim": ("bits/dim", "{:.4f}"),
    "bits_per_code": ("bits/code", "{:.4f}"), "psnr": ("VQ-VAE PSNR (dB)", "{:.2f}"),
    "codes_used": ("codes used", "{:.3f}"),
}
PRIOR_STAGES = ("prior", "bottom_prior")  # the prior stages of a `latentar run` folder, top first
IMAGE_STAGES = ("vqvae", "codes", "images")  # the other timed parts of a `latentar run`


def run_row(folder: str | Path) -> dict[str, Any]:
    """The row of one run folder: {column: value or None}."""
    folder = Path(folder)
    summary = read_if_present(folder / SUMMARY_FILE)
    if summary is not None and (folder / RECIPE_FILE).is_file():
        row = recipe_row(folder, summary, read_if_present(folder / RECIPE_FILE))
    elif summary is not None and isinstance(summary.get("prior"), str):
        row = {"data": summary["data"], "prior": summary["prior"], "preset": summary.get("preset"),
               **scores(summary["test"]), "parameters": summary.get("parameters")}
    elif summary is not None and "vqvae" in summary:
        row = {"data": summary["data"], **vqvae_scores(summary["test"]), "parameters": summary.get("parameters")}
    elif (done := read_if_present(folder / DONE_FILE)) is not None:
        row = {**scores(done["eval"]), **vqvae_scores(done["eval"]), "parameters": parameter_count(folder / MODEL_DIR)}
        config = read_config(folder / MODEL_DIR)
        if config["model_type"] == "prior":
            row["prior"] = config["config"]["name"]
    else:
        raise FileNotFoundError(f"{folder} holds neither {SUMMARY_FILE} nor {DONE_FILE}: expected the folder of a "
                                "finished `latentar run`, `train-prior` or `train-vqvae`")
    if summary is not None:
        row.setdefault("updates", summary.get("steps"))
        row.setdefault("wall_time_s", summary.get("wall_time_s"))
    else:
        row["updates"] = done["step"]
        row["wall_time_s"] = (read_if_present(folder / TIMING_FILE) or {}).get("wall_time_s")  # a recipe's stage
    return {column: row.get(column) for column in COLUMNS} | {"run": str(folder)}


def recipe_row(folder: Path, summary: dict, recipe: dict) -> dict[str, Any]:
    """The row of a `latentar run` folder."""
    stages = [name for name in PRIOR_STAGES if name in summary]
    names = [recipe[name]["name"] for name in stages]
    nats, dims = (sum(summary[name][key] for name in stages) for key in ("nats", "dims"))
    unit = "bits_per_code" if summary["mode"] == "codes" else "bits_per_dim"
    row = {"data": summary["data"], "prior": " / ".join(names), "preset": recipe["prior"].get("preset"),
           "parameters": sum(parameter_count(folder / name / MODEL_DIR) for name in stages),
           "updates": sum(summary[name]["steps"] for name in stages),
           "wall_time_s": sum(summary[name]["wall_time_s"] for name in (*IMAGE_STAGES, *stages) if name in summary),
           "nats_per_image": sum(summary[name]["nats_per_image"] for name in stages),
           unit: nats / (dims * math.log(2))}
    return row | (vqvae_scores(summary["vqvae"]) if "vqvae" in summary else {})


def scores(test: dict) -> dict[str, Any]:
    """A prior's test scores -> its columns."""
    return {key: test[key] for key in ("nats_per_image", "bits_per_dim", "bits_per_code") if key in test}


def vqvae_scores(test: dict) -> dict[str, Any]:
    """A VQ-VAE's test scores -> PSNR and code usage ({"bottom": ..., "top": ...} when hierarchical)."""
    used = test.get("codes_used")
    if used is None and "bottom_codes_used" in test:
        used = {level: test[f"{level}_codes_used"] for level in ("bottom", "top")}
    return {"psnr": test.get("psnr"), "codes_used": used}


def parameter_count(model_folder: Path) -> int:
    """The parameters of the model saved in ``model_folder``, counted on the meta device (no weights read)."""
    config = read_config(model_folder)
    model = meta_model(lambda: MODELS.get(config["model_type"]).from_config(config["config"]), str(model_folder))
    return sum(p.numel() for p in model.parameters())


def read_if_present(path: Path) -> dict | None:
    """The JSON file ``path`` of a run folder, or None where there is none."""
    return read_json(path) if path.is_file() else None


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as one Markdown table, a column per ``COLUMNS`` entry ("—" where a run has no value)."""
    lines = ["| " + " | ".join(header for header, _ in COLUMNS.values()) + " |",
             "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(shown(row[column], style) for column, (_, style) in COLUMNS.items()) + " |")
    return "\n".join(lines)


def shown(value: Any, style: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, dict):
        return " / ".join(style.format(v) for v in value.values()) + " (" + " / ".join(value) + ")"
    return style.format(value)

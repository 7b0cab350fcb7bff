"""Runs side by side: one row per run folder, from its stage records (`latentar.runs.summary`).

    rows = [run_row(folder) for folder in ["runs/main", "runs/bmnist"]]
    print(markdown_table(rows))

Any run folder gives a row: a ``latentar run``, ``train-prior`` or ``train-vqvae`` folder, a stage
of a run, or any trainer's folder (``done.json`` + ``model/``). Its columns are ``COLUMNS``; a
value a run does not have is None. A row is about the run's priors: their names, the top prior's
preset, their parameters and updates added up, their test scores combined (nats per item summed:
per image for pixel priors, per image's code grid(s) for code priors, which are not comparable;
bits = total nats over total symbols; over Image GPT's palette tokens, bits per palette token, in a
column of their own: not comparable with bits/dim); a run without a prior gives its VQ-VAE's
parameters and updates. The VQ-VAE (or palette) gives PSNR and code usage; the wall time adds up every
stage and the final images. A recipe with ``[metrics]`` adds its samples' FID, precision, recall
and class accuracy, with what they were measured on (sample count, reference split, features):
compare them only between rows where that column agrees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentar.evaluation import bits_per_dim
from latentar.quality.sweep import short_features
from latentar.runs.summary import read_summary, stage_records

# column -> (header, how a value is shown)
COLUMNS = {
    "run": ("run", "{}"), "data": ("data", "{}"), "prior": ("prior", "{}"), "preset": ("preset", "{}"),
    "parameters": ("parameters", "{:,}"), "updates": ("updates", "{}"), "wall_time_s": ("wall time (s)", "{:.0f}"),
    "nats_per_image": ("test nats/image or code grid", "{:.2f}"), "bits_per_dim": ("bits/dim", "{:.4f}"),
    "bits_per_code": ("bits/code", "{:.4f}"), "bits_per_palette_token": ("bits/palette token", "{:.4f}"),
    "psnr": ("VQ-VAE or palette PSNR (dB)", "{:.2f}"),
    "codes_used": ("codes used", "{:.3f}"), "fid": ("FID", "{:.2f}"), "precision": ("precision", "{:.3f}"),
    "recall": ("recall", "{:.3f}"), "class_accuracy": ("class acc.", "{:.3f}"),
    "measured": ("sample metrics: n vs reference, features", "{}"),
}
SAMPLE_COLUMNS = ("fid", "precision", "recall", "class_accuracy")  # from the run's [metrics] samples


def run_row(folder: str | Path) -> dict[str, Any]:
    """The row of one run folder: {column: value or None}."""
    summary = read_summary(folder)
    records = stage_records(summary)
    priors = [r for r in records if r["stage"] == "prior"]
    vqvaes = [r for r in records if r["stage"] in ("vqvae", "palette")]
    counted = priors or vqvaes  # whose parameters and updates the row shows
    times = [r.get("wall_time_s") for r in records] + [summary.get("images", {}).get("wall_time_s")]
    row = {"data": summary.get("data"), "prior": " / ".join(r["prior"] for r in priors) or None,
           "preset": priors[0].get("preset") if priors else None,
           "parameters": sum(r["parameters"] for r in counted) if counted else None,
           "updates": sum(r["steps"] for r in counted) if counted else None,
           "wall_time_s": sum(t for t in times if t is not None) if any(t is not None for t in times) else None,
           **prior_scores([r["test"] for r in priors]), **vqvae_scores(vqvaes[0]["test"] if vqvaes else {}),
           **sample_scores(summary.get("metrics"))}
    return {column: row.get(column) for column in COLUMNS} | {"run": str(folder)}


def prior_scores(tests: list[dict]) -> dict[str, Any]:
    """The priors' test scores, top first -> nats per image (summed) and bits per dimension, per
    code or per palette token (total nats over total symbols)."""
    if not tests:
        return {}
    unit = "bits_per_code" if "bits_per_code" in tests[0] else "bits_per_dim"
    unit = "bits_per_palette_token" if "tokens" in tests[0] else unit  # `latentar.data.subsets.split_notes`
    nats, dims = (sum(test[key] for test in tests) for key in ("nats", "dims"))
    return {"nats_per_image": sum(test["nats_per_image"] for test in tests), unit: bits_per_dim(nats, dims)}


def sample_scores(metrics: dict | None) -> dict[str, Any]:
    """A run's ``metrics`` record -> its samples' FID, precision, recall, class accuracy, and what
    they were measured on."""
    if not metrics:
        return {}
    return {**{key: metrics["samples"].get(key) for key in SAMPLE_COLUMNS},
            "measured": f"{metrics['n']} vs {metrics['reference']}, {short_features(metrics['features'])}"}


def vqvae_scores(test: dict) -> dict[str, Any]:
    """A VQ-VAE's test scores -> PSNR and code usage ({"bottom": ..., "top": ...} when hierarchical)."""
    used = test.get("codes_used")
    if used is None and "bottom_codes_used" in test:
        used = {level: test[f"{level}_codes_used"] for level in ("bottom", "top")}
    return {"psnr": test.get("psnr"), "codes_used": used}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as one Markdown table, a column per ``COLUMNS`` entry ("—" where a run has no value)."""
    lines = ["| " + " | ".join(header for header, _ in COLUMNS.values()) + " |",
             "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(shown(row[column], style) for column, (_, style) in COLUMNS.items()) + " |")
    return "\n".join(lines)


def shown(value: Any, style: str) -> str:
    """One cell: "—" for None, a dict's values joined with its keys in brackets, else ``style``."""
    if value is None:
        return "—"
    if isinstance(value, dict):
        return " / ".join(style.format(v) for v in value.values()) + " (" + " / ".join(value) + ")"
    return style.format(value)

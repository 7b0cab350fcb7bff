"""Training curves of a run's stages: ``curves.png``, a panel per stage, train and test in one unit.

    plot_curves(stage_curves(Path("runs/main"), ["vqvae", "prior"]), "runs/main/curves.png")

A prior's panel is in bits per symbol under its metric name (`latentar.evaluation.bits_name`):
bits per code for a code prior (per palette token over Image GPT's palette tokens, whose test
scores carry a ``tokens`` note), bits per dimension for a pixel prior; its training loss (mean
nats per symbol) is converted to bits, so train and test share the axis. A VQ-VAE's panel is
PSNR in dB, of the training batches and of the test split. Updates are on a log scale when
they span two decades or more.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from latentar.evaluation import bits_per_dim
from latentar.images import figure_image, save_image
from latentar.run_files import read_metrics

UNITS = {"bits_per_code": "bits per code", "bits_per_dim": "bits per dimension", "psnr": "PSNR (dB)"}
PALETTE_UNIT = "bits per palette token"  # bits_per_code of a prior over palette tokens


class Panel(NamedTuple):
    """One stage's curves: train and test (step, value) points of ``metric`` (a key of ``UNITS``)."""

    stage: str
    metric: str
    train: list[tuple[int, float]]
    test: list[tuple[int, float]]
    unit: str | None = None  # the axis's words; None: UNITS[metric]


def stage_curves(out: Path, stages: list[str]) -> list[Panel]:
    """A `Panel` per stage folder of ``out`` that logged a metric of ``UNITS``, from its metrics.jsonl."""
    panels = []
    for stage in stages:
        records = read_metrics(out / stage)
        logged = [key for r in records for key in r.get("eval", {})] + [key for r in records for key in r]
        metric = next((key for key in logged if key in UNITS), None)  # test names first: runs before
        if metric is None:                                            # format 3 logged train bits as bits_per_dim
            continue
        train = [(r["step"], train_value(r, metric)) for r in records if "loss" in r]
        test = [(r["step"], r["eval"][metric]) for r in records if metric in r.get("eval", {})]
        palette = any("tokens" in r.get("eval", {}) for r in records)  # `latentar.data.subsets.split_notes`
        panels.append(Panel(stage, metric, train, test, PALETTE_UNIT if palette else None))
    return panels


def train_value(record: dict, metric: str) -> float:
    """A training record in the unit of ``metric``: a VQ-VAE's PSNR, a prior's loss (nats per symbol) in bits."""
    return record["psnr"] if metric == "psnr" else float(bits_per_dim(record["loss"], 1))


def plot_curves(panels: list[Panel], path: str | Path) -> Path:
    """Draw the panels side by side (train a line, test markers, a legend each) into the image ``path``."""
    from matplotlib.figure import Figure  # matplotlib is slow to import; only figures need it
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(4.6 * max(len(panels), 1), 3.6), dpi=100, layout="constrained")
    for ax, panel in zip(figure.subplots(1, max(len(panels), 1), squeeze=False)[0], panels):
        for name, points, marker in (("train", panel.train, "." if len(panel.train) < 50 else ""),
                                     ("test", panel.test, "o")):
            if points:
                ax.plot(*zip(*points), label=name, marker=marker, markersize=6)
        steps = [s for s, _ in panel.train + panel.test]
        if steps and min(steps) > 0 and max(steps) >= 100 * min(steps):
            ax.set_xscale("log")
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # whole updates
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        unit = panel.unit or UNITS[panel.metric]
        ax.set(title=f"{panel.stage}: {unit}", xlabel="update", ylabel=unit)
        ax.grid(alpha=0.3)
        ax.legend()
    return save_image(figure_image(figure), path)

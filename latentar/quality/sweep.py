"""Sweeps of the sampling knobs: draw n samples per knob value, measure each set against one
reference, and plot FID against the knob and precision against recall, the way the guidance
literature picks its scale (``latentar sweep``).

    points = sweep(extractor, reference, prior, vqvae, n=1000, values={"cfg_scale": [1, 1.5, 2, 3, 5]},
                   fixed={"temperature": 1.0, "top_k": None, "top_p": None, "cfg_scale": 1.0, "seed": 0})
    plot_sweep(points, "sweep.png")

Each swept knob takes its values in turn while every other knob keeps its ``fixed`` value (a
swept knob's fixed value is its default), and every value draws with the same seed, so the
differences between points come from the knob alone. A setting two sweeps share is drawn once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentar.images import figure_image, save_image
from latentar.priors.base import Prior
from latentar.progress import progress_bar
from latentar.quality.drawn import check_knobs, check_levels, measure_prior
from latentar.quality.features import ClassifierFeatures, Extractor
from latentar.quality.measure import BATCH, Reference
from latentar.vqvae import Tokenizer

LABELS = {"cfg_scale": "guidance scale", "temperature": "temperature", "top_k": "top-k", "top_p": "top-p"}


def sweep_settings(values: dict[str, list], fixed: dict[str, Any]) -> list[tuple[str, Any, dict[str, Any]]]:
    """[(knob, value, the sampling settings of that point)] of every value of every swept knob of
    ``values`` ({knob: values}), the other knobs at their ``fixed`` value."""
    return [(knob, value, {**fixed, knob: value}) for knob, knob_values in values.items() for value in knob_values]


def sweep(extractor: Extractor, reference: Reference, prior: Prior, vqvae: Tokenizer | None, n: int,
          values: dict[str, list], fixed: dict[str, Any], *, bottom_prior: Prior | None = None,
          classifier: ClassifierFeatures | None = None, batch_size: int = BATCH) -> list[dict[str, Any]]:
    """A point per knob value (`sweep_settings`): {"knob", "value", **`measure_prior`'s result}.
    Every setting is checked against the prior before the first draw."""
    if not values or any(not v for v in values.values()):
        raise ValueError("a sweep needs at least one knob with values, e.g. cfg_scale = [1, 1.5, 2, 3, 5]")
    unknown = sorted(set(values) - set(LABELS))
    if unknown:
        raise ValueError(f"{unknown[0]} is not a sampling knob; a sweep varies {', '.join(LABELS)}")
    settings = sweep_settings(values, fixed)
    for knob, value, sampling in settings:
        check_knobs(prior, sampling, f"{knob} = {value}")
    check_levels(prior, vqvae, reference.levels)
    measured: dict[tuple, dict[str, Any]] = {}  # a setting two sweeps share is measured once
    points = []
    for knob, value, sampling in progress_bar(settings, desc="sweep", unit="point"):
        key = tuple(sorted(sampling.items()))
        if key not in measured:
            measured[key] = measure_prior(extractor, reference, prior, vqvae, n, sampling, bottom_prior=bottom_prior,
                                          classifier=classifier, batch_size=batch_size)
        points.append({"knob": knob, "value": value, **measured[key]})
    return points


def plot_sweep(points: list[dict[str, Any]], path: str | Path) -> Path:
    """FID against each swept knob (a panel each), then precision against recall with every point
    labelled by its knob value, side by side, into the image ``path``."""
    from matplotlib.figure import Figure  # matplotlib is slow to import; only figures need it

    knobs = list(dict.fromkeys(point["knob"] for point in points))
    figure = Figure(figsize=(4.4 * (len(knobs) + 1), 3.8), dpi=100, layout="constrained")
    axes = figure.subplots(1, len(knobs) + 1, squeeze=False)[0]
    first = points[0]
    for ax, knob in zip(axes, knobs):
        mine = [p for p in points if p["knob"] == knob]
        numeric = all(p["value"] is not None for p in mine)  # else a knob turned off ("none") among them
        ax.plot([p["value"] if numeric else i for i, p in enumerate(mine)], [p["fid"] for p in mine], marker="o")
        if not numeric:
            ax.set_xticks(range(len(mine)), [str(p["value"]) for p in mine])
        ax.set(title=f"FID vs {LABELS[knob]}", xlabel=LABELS[knob], ylabel="FID (lower is better)")
        ax.grid(alpha=0.3)
    pr = axes[-1]
    for knob in knobs:
        mine = [p for p in points if p["knob"] == knob]
        pr.plot([p["recall"] for p in mine], [p["precision"] for p in mine], marker="o", label=LABELS[knob])
        for p in mine:
            pr.annotate(str(p["value"]), (p["recall"], p["precision"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
    pr.set(title="precision vs recall", xlabel="recall (diversity)", ylabel="precision (fidelity)",
           xlim=(-0.05, 1.05), ylim=(-0.05, 1.05))  # both are shares
    pr.grid(alpha=0.3)
    pr.legend()
    figure.suptitle(f"{first['n']} samples vs {first['reference_n']} of {first['reference']}; "
                    f"features: {short_features(first['features'])}", fontsize=9)
    return save_image(figure_image(figure), path)


def short_features(name: str) -> str:
    """A feature extractor's name without the folder it was read from: "classifier (…, test acc 0.98)"."""
    if name.startswith("classifier:") and " (" in name:
        return "classifier (" + name.split(" (", 1)[1]
    return name

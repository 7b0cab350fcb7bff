"""Model cards: the ``README.md`` of an exported model folder, in the Hugging Face convention.

    write_model_card("runs/bmnist/model", prior, dataset="binarized_mnist",
                     training=asdict(config), metrics={"bits_per_dim": 0.15, ...})

The card opens with YAML front matter (``library_name: latentar``, ``tags``, ``datasets``),
then says what the model is (its architecture and parameter count), how it was trained,
how it scored on the test split, and how to load it. It is for people and for model hubs:
``latentar.load`` never reads it, and the sha256 in ``config.json`` covers only the weights.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from latentar.files import atomic_write_bytes
from latentar.saving import versions

CARD_FILE = "README.md"


class CardModel(Protocol):
    """What a card reads of a model: a saved prior, VQ-VAE or classifier (``latentar.saving.Saveable``)."""

    @property
    def model_type(self) -> str: ...

    def config_dict(self) -> dict: ...

    def parameters(self) -> Iterator[nn.Parameter]: ...


def write_model_card(folder: str | Path, model: CardModel, *, dataset: str | None = None,
                     training: dict | None = None, metrics: dict | None = None) -> Path:
    """Write ``folder/README.md`` describing ``model`` (a saved prior, VQ-VAE or classifier)."""
    path = Path(folder) / CARD_FILE
    atomic_write_bytes(path, model_card(model, folder=folder, dataset=dataset, training=training,
                                        metrics=metrics).encode())
    return path


def model_card(model: CardModel, *, folder: str | Path, dataset: str | None = None, training: dict | None = None,
               metrics: dict | None = None) -> str:
    """The card's Markdown text (see the module docstring)."""
    config = model.config_dict()
    parameters = sum(p.numel() for p in model.parameters())
    sections = [front_matter(tags(model.model_type, config), dataset),
                f"# {title(model.model_type, config)}\n\n{summary(model.model_type, config, dataset)}",
                "## Architecture\n\n" + f"{parameters:,} parameters.\n\n" + table(flatten(config)),
                "## Software\n\n" + table({f"{name} version": v for name, v in versions().items()}),
                "## Training\n\n" + (table(flatten(training)) if training else "Not recorded."),
                "## Test metrics\n\n" + (table(flatten(metrics)) if metrics else "Not recorded."),
                "## Load\n\n```python\nimport latentar\n\n"
                f"model = latentar.load({json.dumps(str(folder))})\n```\n\n"
                f"or from the command line: `latentar eval --model {folder} --data DATA`"]
    return "\n\n".join(sections) + "\n"


def tags(model_type: str, config: dict) -> list[str]:
    if model_type == "classifier":
        return ["latentar", "image-classification", "sample-metrics"]
    if model_type == "vqvae":
        return ["latentar", "vq-vae", "vqvae-2" if config["config"]["hierarchical"] else "vqvae"]
    return ["latentar", "autoregressive", "prior", config["name"], config["spec"]["head"],
            f"{config['spec']['symbols']}-mode"]


def front_matter(tag_list: list[str], dataset: str | None) -> str:
    """YAML front matter; each value is written as a JSON string, which YAML reads as written."""
    lines = ["---", "library_name: latentar", "tags:", *(f"- {json.dumps(t)}" for t in tag_list)]
    if dataset:
        lines += ["datasets:", f"- {json.dumps(dataset)}"]
    return "\n".join(lines + ["---"])


def title(model_type: str, config: dict) -> str:
    if model_type == "classifier":
        return f"Classifier of {'×'.join(map(str, config['image_shape']))} images into {config['num_classes']} classes"
    if model_type == "vqvae":
        return f"VQ-VAE for {'×'.join(map(str, config['image_shape']))} images"
    spec = config["spec"]
    return f"{config['name']} prior over {'×'.join(map(str, spec['shape']))} {spec['symbols']}"


def summary(model_type: str, config: dict, dataset: str | None) -> str:
    trained = f" trained on `{dataset}`" if dataset else ""
    if model_type == "classifier":
        accuracy = config["test_accuracy"]
        measured = "" if accuracy is None else f" Its test accuracy is {accuracy:.4f}."
        return (f"A small CNN classifier{trained}: its penultimate layer ({config['feature_dim']} features) is what "
                f"`latentar eval-samples --features classifier:PATH` compares.{measured} Made with latentar.")
    if model_type == "vqvae":
        vq = config["config"]
        return (f"A VQ-VAE{trained}: it encodes images into grids of codes from a codebook of "
                f"{vq['codebook_size']} and decodes code grids back into images. Made with latentar.")
    spec = config["spec"]
    conditional = f", conditioned on {spec['num_classes']} classes" if spec["num_classes"] else ""
    return (f"An exact autoregressive prior{trained}: `log_prob` is the true log-likelihood of a grid of "
            f"{spec['num_symbols']} symbols per position, drawn in raster order with the `{spec['head']}` "
            f"head{conditional}. Made with latentar.")


def flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"spec.shape": [1, 7, 7], ...}."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def table(values: dict[str, Any]) -> str:
    """A two-column Markdown table of names and values."""
    rows = [f"| {name} | {shown(value)} |" for name, value in values.items()]
    return "\n".join(["| name | value |", "|---|---|", *rows])


def shown(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.6g}"
    if isinstance(value, str):
        return value.replace("|", "\\|")
    return json.dumps(value)

"""Models save as a folder: ``config.json`` (what to build) + ``model.safetensors`` (weights).

Loading never unpickles anything: the config names a registered model type, the type
rebuilds itself from plain JSON, and the weights come from safetensors.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from latentar.registry import MODELS

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


class NotAModelError(ValueError):
    """A folder that does not hold a saved latentar model, or holds a damaged one."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


class Saveable:
    """Mixin for ``nn.Module`` models that can rebuild themselves from a JSON config."""

    model_type: ClassVar[str]

    def config_dict(self) -> dict:
        """Plain-JSON description from which ``from_config`` rebuilds an identical model."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict):
        raise NotImplementedError

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``config.json`` + ``model.safetensors`` into ``folder`` (each file atomically)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{WEIGHTS_FILE}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(state, tmp, metadata={"format": "pt"})
            os.replace(tmp, folder / WEIGHTS_FILE)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        config = {"format_version": FORMAT_VERSION, "model_type": self.model_type,
                  "config": self.config_dict()}
        atomic_write_json(folder / CONFIG_FILE, config)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, map_location: str | torch.device = "cpu"):
        model = load(folder, map_location)
        if not isinstance(model, cls):
            raise NotAModelError(f"{folder} holds a {type(model).__name__}, not a {cls.__name__}")
        return model


def read_config(folder: str | os.PathLike) -> dict:
    """The parsed ``config.json`` of a saved model folder, checked for the expected keys."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotAModelError(f"{folder} is not a folder; expected a saved model folder "
                             f"with {CONFIG_FILE} and {WEIGHTS_FILE}")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise NotAModelError(f"{folder} is not a saved model: {CONFIG_FILE} is missing")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NotAModelError(f"{path} is not valid JSON: {e}") from e
    for key in ("model_type", "config"):
        if not isinstance(config, dict) or key not in config:
            raise NotAModelError(f"{path} has no {key!r} entry; it was not written by latentar")
    return config


def load(folder: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """Load any saved latentar model (a prior or a VQ-VAE) from its folder."""
    folder = Path(folder)
    config = read_config(folder)
    cls = MODELS.get(config["model_type"])
    model = cls.from_config(config["config"])
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise NotAModelError(f"{folder} is not a saved model: {WEIGHTS_FILE} is missing")
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError) as e:
        raise NotAModelError(f"{weights} is damaged or not a safetensors file: {e}") from e
    missing, unexpected = _mismatch(model.state_dict(), state)
    if missing or unexpected:
        raise NotAModelError(f"{weights} does not match {config['config'].get('name', cls.__name__)}"
                             f" built from {CONFIG_FILE}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict(state)
    return model.to(map_location)


def _mismatch(expected: dict, found: dict) -> tuple[list[str], list[str]]:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k].shape != found[k].shape)
    return missing + [f"{k} (shape {tuple(found[k].shape)} != {tuple(expected[k].shape)})"
                      for k in wrong], unexpected

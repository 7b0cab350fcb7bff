"""The one tiny recipe that the recipe tests share, written as TOML.

``TINY``: a generated 8×8 ``image_folder`` (the ``image_folder`` fixture), a tiny VQ-VAE and
a tiny PixelCNN over its codes, each trained for 3 steps. A test replaces only the sections it
is about (a table of its own, or None to leave the section out):

    path = write_recipe(tmp_path, image_folder, **PIXELS, prior_train={"steps": 1, "batch_size": 4})
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TINY: dict[str, dict | None] = {
    "data": {"name": "image_folder", "options": {"size": 8}},
    "vqvae": {"preset": "tiny"},
    "vqvae_train": {"steps": 3, "batch_size": 8},
    "prior": {"name": "pixelcnn", "preset": "tiny"},
    "prior_train": {"steps": 3, "batch_size": 8},
}
PIXELS = {"vqvae": None, "vqvae_train": None}  # pixel mode: no VQ-VAE
PIXELSNAIL = {"name": "pixelsnail", "preset": "tiny", "embed_dim": 4}  # a [prior] that takes a spatial context
SMALL_PIXELS = {**PIXELS, "data": {"name": "image_folder", "options": {"size": 4}},
                "prior_train": {"steps": 1, "batch_size": 4}}  # pixel mode on 4×4 images, one update


def write_recipe(folder: Path, root: str | Path = "unused", *, extra: str = "", **sections: dict | None) -> Path:
    """Write ``folder/recipe.toml``: ``TINY`` with ``data.root = root``, each of ``sections``
    replacing (or, None, removing) its table, then the raw TOML ``extra`` -> its path."""
    tables = {**TINY, **sections}
    tables["data"] = {**tables["data"], "root": str(root)}
    text = "".join(f"[{name}]\n" + "".join(f"{key} = {toml_value(value)}\n" for key, value in table.items()) + "\n"
                   for name, table in tables.items() if table is not None)
    path = Path(folder) / "recipe.toml"
    path.write_text(text + extra)
    return path


def toml_value(value: Any) -> str:
    """A string, number, bool or table (as an inline table) in TOML."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {toml_value(v)}" for key, v in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, str) else repr(value)

"""Image files: PNG grids, single images and the checks of an image path, for uint8 images.

Images are uint8 tensors (N, C, H, W), C = 1 or 3, with ``levels`` values (256, or 2 when
binarized); a grid shows them scaled to [0, 255], ``nrow`` per row on white. Every file is
written atomically (``latentar.files.atomic_write``): a failed write keeps the previous file
and raises ``WriteError``.

    save_grid(images, "grid.png", nrow=8)            # one PNG of all the images
    save_individual(images, "each")                  # each/00000.png, each/00001.png, ...
    save_image(figure_image(figure), "curves.png")   # a matplotlib Figure, drawn with Agg (no display)
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from latentar.files import atomic_write

MAX_NROW = 1024  # images in one row of a grid: wider grids are no image a viewer opens


def to_display(images: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """uint8 images with ``levels`` values (2 when binarized) -> uint8 in [0, 255]."""
    if levels == 256:
        return images
    return (images.float() * (255 / (levels - 1))).round().to(torch.uint8)


def image_grid(images: torch.Tensor, nrow: int = 8, levels: int = 256) -> torch.Tensor:
    """uint8 images (N, C, H, W) with ``levels`` values -> one uint8 grid (3, H', W') in [0, 255],
    ``nrow`` images per row on white."""
    from torchvision.utils import make_grid  # torchvision is slow to import; only grids need it

    return make_grid(to_display(images, levels), nrow=check_nrow(nrow), padding=2, pad_value=255)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, levels: int = 256) -> Path:
    """Write uint8 images (N, C, H, W) as one PNG grid with ``nrow`` images per row."""
    path = check_image_path(path)
    return save_image(image_grid(images, nrow, levels), path)


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    """Write one uint8 image (C, H, W), C = 1 or 3, as a PNG (its folder made if needed),
    atomically: a failed write keeps the previous file at ``path`` and raises ``WriteError``."""
    path = Path(path)
    array = rearrange(image.cpu(), "c h w -> h w c").numpy()
    Image.init()
    with atomic_write(path) as f:
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(f, format=image_format(path))
    return path


def figure_image(figure: Any) -> torch.Tensor:
    """A matplotlib ``Figure``, drawn with the Agg backend (no display needed) -> uint8 RGB image (3, H, W)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib is slow to import; only figures need it

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())  # (H, W, 4)
    return rearrange(torch.from_numpy(rgba[..., :3].copy()), "h w c -> c h w")


def save_individual(images: torch.Tensor, folder: str | Path, levels: int = 256) -> list[Path]:
    """Write each uint8 image (N, C, H, W) as ``folder/00000.png`` ..."""
    return [save_image(image, Path(folder) / f"{i:05d}.png") for i, image in enumerate(to_display(images, levels))]


def check_image_path(path: str | Path) -> Path:
    """An image file about to be written: its extension names a format PIL writes, it is not
    a folder, and its nearest existing parent is a writable folder. Checked before any work."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected an image file name, e.g. {path / 'grid.png'}")
    Image.init()
    if Image.registered_extensions().get(path.suffix.lower()) not in Image.SAVE:
        got = f"the extension {path.suffix!r}" if path.suffix else "no extension"
        raise ValueError(f"{path}: expected an image file name ending in .png (or .jpg, .bmp, ...), got {got}")
    parent = next(p for p in path.absolute().parents if p.exists())
    if not parent.is_dir():
        raise ValueError(f"cannot write {path}: {parent} is a file, expected a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {path}: the folder {parent} is not writable")
    return path


def image_format(path: Path) -> str:
    """The PIL format that ``path``'s extension names (PNG when it names none)."""
    return Image.registered_extensions().get(path.suffix.lower(), "PNG")


def check_nrow(nrow: Any) -> int:
    """Images per row of a grid: an integer (not a bool) in [1, ``MAX_NROW``]."""
    if isinstance(nrow, bool) or not isinstance(nrow, numbers.Integral) or not 1 <= int(nrow) <= MAX_NROW:
        raise ValueError(f"nrow (images per grid row) must be an integer in [1, {MAX_NROW}], got {nrow!r}")
    return int(nrow)

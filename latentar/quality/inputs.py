"""Images to measure that are files: a ``.npy`` array or a folder of PNG / JPEG files.

Both are read as the reference split's images: uint8 (N, C, H, W) with its ``shape`` and
``levels``. A ``.npy`` holds (N, C, H, W) or, for one channel, (N, H, W); uint8 values below
``levels``, or floats in [0, 1] (scaled to the levels and rounded). A folder's image files
are read in name order, as grayscale for a one-channel reference and as RGB for three.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from latentar.files import MAX_DATASET_FILE_BYTES, read_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_IMAGE_FILE_BYTES = 1 << 26  # one image file of a folder


def read_images(path: str | Path, shape: tuple[int, int, int], levels: int, n: int | None = None) -> torch.Tensor:
    """The first ``n`` (all: None) images of a ``.npy`` file or an image folder -> uint8 (n, C, H, W)."""
    path = Path(path)
    if path.is_dir():
        images = read_folder(path, shape[0], n)
    elif path.suffix == ".npy":
        images = read_npy(path, levels)
    else:
        raise ValueError(f"--images {path} must be a .npy file or a folder of {'/'.join(IMAGE_SUFFIXES)} images")
    if images.dim() == 3 and shape[0] == 1:
        images = images[:, None]  # (N, H, W) -> (N, 1, H, W)
    if images.dim() != 4 or tuple(images.shape[1:]) != tuple(shape):
        raise ValueError(f"{path} holds images of shape {tuple(images.shape)}; the reference split's are "
                         f"(N, {', '.join(map(str, shape))})")
    if images.numel() and int(images.max()) >= levels:
        raise ValueError(f"{path} holds values up to {int(images.max())}; the reference split's images take "
                         f"{levels} levels, [0, {levels})")
    if n is not None and len(images) < n:
        raise ValueError(f"-n {n} asks for more images than the {len(images)} of {path}")
    return images[:n]


def read_npy(path: Path, levels: int) -> torch.Tensor:
    """A ``.npy`` of uint8 levels or floats in [0, 1] (no pickled objects) -> uint8 tensor."""
    try:
        array = np.load(io.BytesIO(read_bytes(path, MAX_DATASET_FILE_BYTES, follow=True)), allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"{path} is not a .npy array of images: {e}") from e
    if array.dtype == np.uint8:
        return torch.from_numpy(array.copy())
    if np.issubdtype(array.dtype, np.floating):
        if array.size and not (np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1):
            raise ValueError(f"{path} holds floats outside [0, 1]; float images must lie in [0, 1]")
        return torch.from_numpy(np.rint(array * (levels - 1)).astype(np.uint8))
    raise ValueError(f"{path} holds {array.dtype} values; images are uint8, or floats in [0, 1]")


def read_folder(folder: Path, channels: int, n: int | None) -> torch.Tensor:
    """The first ``n`` image files of ``folder``, in name order -> uint8 (n, channels, H, W)."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:n]
    if not files:
        raise ValueError(f"{folder} holds no {'/'.join(IMAGE_SUFFIXES)} images")
    images = []
    for file in files:
        try:
            with Image.open(io.BytesIO(read_bytes(file, MAX_IMAGE_FILE_BYTES, follow=True))) as image:
                pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"))  # (H, W) or (H, W, 3)
        except (OSError, SyntaxError) as e:  # PIL's errors for files it cannot decode
            raise ValueError(f"{file} is not an image PIL can decode: {e}") from e
        images.append(torch.from_numpy(pixels.copy()).reshape(*pixels.shape[:2], -1).permute(2, 0, 1))
    if len({tuple(image.shape) for image in images}) > 1:
        raise ValueError(f"the images of {folder} differ in size; they must all be the reference split's size")
    return torch.stack(images)

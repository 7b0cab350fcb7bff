"""Regions of a grid to redraw (completion) or to score given the rest, named on the command line.

    region("centre", image_hw=(28, 28), grid_hw=(7, 7))        # bool (7, 7): True = redraw
    region("box:4,4,20,14", image_hw=(28, 28), grid_hw=(7, 7))  # pixel box -> the codes it touches

A spec is one of:

- ``top``, ``bottom``, ``left``, ``right``: that half of the grid (the middle row or column of an
  odd side belongs to both halves, so ``top`` and ``bottom`` together cover the grid);
- ``centre`` (or ``center``): the central rectangle of half the height and half the width;
- ``random:FRACTION``: each position independently with that probability (seeded; at least one);
- ``box:R0,C0,R1,C1``: rows R0..R1-1 and columns C0..C1-1 of the *image*, in pixels;
- a path to a PNG of the image's size: its pixels brighter than half are the region.

Named halves, ``centre`` and ``random`` are laid on the grid that is modelled: pixels in pixel
mode, the code grid in code mode (so a code-mode ``centre`` is the central codes). A ``box`` and a
PNG are in image pixels whatever the mode; in code mode a code belongs to the region when any
pixel it covers does (the codes that have to change for those pixels to change).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from einops import reduce
from PIL import Image

from latentar.files import read_bytes

HALVES = ("top", "bottom", "left", "right")
NAMED = (*HALVES, "centre", "center")
MAX_MASK_BYTES = 1 << 26  # a mask PNG larger than this is refused
MASK_HELP = ("top | bottom | left | right | centre | random:FRACTION | box:R0,C0,R1,C1 (image pixels) | "
             "PATH.png (image-sized; bright = region)")


def region(spec: str, image_hw: tuple[int, int], grid_hw: tuple[int, int], *, seed: int = 0) -> torch.Tensor:
    """The region ``spec`` names (see the module docstring) on the modelled grid ``grid_hw`` (h, w) of
    images ``image_hw`` (H, W) -> bool (h, w), True where symbols are redrawn. A spec that names no
    position, or all of none, is refused naming the spec."""
    h, w = grid_hw
    if spec in NAMED:
        mask = named_region(spec, h, w)
    elif spec.startswith("random:"):
        mask = random_region(spec, h, w, seed)
    elif spec.startswith("box:"):
        mask = on_grid(box_region(spec, *image_hw), grid_hw, spec)
    elif spec.lower().endswith(".png"):
        mask = on_grid(png_region(Path(spec), image_hw), grid_hw, spec)
    else:
        raise ValueError(f"--mask {spec!r} is not a region; one of {MASK_HELP}")
    if not mask.any():
        raise ValueError(f"--mask {spec!r} holds no position of the {h}×{w} grid")
    return mask


def named_region(name: str, h: int, w: int) -> torch.Tensor:
    """A half, or the centre, of an h×w grid -> bool (h, w)."""
    rows, cols = torch.arange(h)[:, None], torch.arange(w)[None, :]
    part = {"top": rows < (h + 1) // 2, "bottom": rows >= h // 2, "left": cols < (w + 1) // 2,
            "right": cols >= w // 2}.get(name)
    if part is None:  # centre: rows [h/4, h/4 + h/2), columns likewise, at least one each
        r0, c0 = h // 4, w // 4
        part = (rows >= r0) & (rows < r0 + max(1, h // 2)) & (cols >= c0) & (cols < c0 + max(1, w // 2))
    return part.expand(h, w).clone()


def random_region(spec: str, h: int, w: int, seed: int) -> torch.Tensor:
    """random:FRACTION -> bool (h, w): each position with probability FRACTION, at least one."""
    fraction = _number(spec.removeprefix("random:"), spec, float)
    if not 0 < fraction <= 1:
        raise ValueError(f"--mask {spec!r}: the fraction must lie in (0, 1]")
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(h, w, generator=g) < fraction
    if not mask.any():
        mask.view(-1)[torch.randint(h * w, (1,), generator=g)] = True
    return mask


def box_region(spec: str, H: int, W: int) -> torch.Tensor:
    """box:R0,C0,R1,C1 -> bool (H, W): rows R0..R1-1, columns C0..C1-1 (half-open, image pixels)."""
    parts = spec.removeprefix("box:").split(",")
    if len(parts) != 4:
        raise ValueError(f"--mask {spec!r}: a box is box:R0,C0,R1,C1 (four integers)")
    r0, c0, r1, c1 = (_number(p, spec, int) for p in parts)
    if not (0 <= r0 < r1 <= H and 0 <= c0 < c1 <= W):
        raise ValueError(f"--mask {spec!r}: need 0 <= R0 < R1 <= {H} and 0 <= C0 < C1 <= {W} (the image's pixels)")
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[r0:r1, c0:c1] = True
    return mask


def png_region(path: Path, image_hw: tuple[int, int]) -> torch.Tensor:
    """A mask image of the images' size -> bool (H, W): its pixels brighter than half."""
    try:
        with Image.open(io.BytesIO(read_bytes(path, MAX_MASK_BYTES, follow=True))) as image:
            gray = np.asarray(image.convert("L"))
    except (OSError, ValueError) as e:  # missing, not a regular file, too large, not an image
        raise ValueError(f"--mask {path}: not a readable PNG ({e})") from e
    if gray.shape != tuple(image_hw):
        raise ValueError(f"--mask {path} is {gray.shape[0]}×{gray.shape[1]}; the images are "
                         f"{image_hw[0]}×{image_hw[1]}")
    return torch.from_numpy(gray > 127)


def on_grid(pixels: torch.Tensor, grid_hw: tuple[int, int], spec: str) -> torch.Tensor:
    """A pixel region bool (H, W) on a grid (h, w) that divides it: a cell is in the region when any
    pixel it covers is -> bool (h, w)."""
    (H, W), (h, w) = pixels.shape, grid_hw
    if H % h or W % w:
        raise ValueError(f"--mask {spec!r}: the {H}×{W} images do not split into the {h}×{w} grid's cells")
    return reduce(pixels.to(torch.uint8), "(h a) (w b) -> h w", "max", h=h, w=w).bool()


def _number(text: str, spec: str, kind: type):
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"--mask {spec!r}: {text!r} is not {'an integer' if kind is int else 'a number'}") from None

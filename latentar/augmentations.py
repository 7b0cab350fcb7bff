"""Distribution augmentation: exact, invertible transforms of symbol grids and images, named by id.

    y = augment(x, ids, ("rot90", "transpose"))          # x (B, C, H, W): long symbols or uint8 images
    x = augment(y, ids, ("rot90", "transpose"), inverse=True)

An augmentation type is a small group of rearrangements of a grid (no value changes, so the
transform is exact on any dtype):

- ``rot90``: rotation by k·90° counterclockwise in the (H, W) plane, k in 0..3 (square grids);
- ``transpose``: swap H and W, 0 or 1 (square grids);
- ``flip``: mirror left-right (reverse W), 0 or 1;
- ``channels``: one of the 6 permutations of 3 channels (C = 3);
- ``jigsaw``: one of the 24 permutations of the 2×2 tiles of the grid (even H and W).

Several types form their product: an id in [0, num_augmentations) is a mixed-radix number
whose digits are the types' values, the first type given the most significant digit
(rot90 × transpose: id = 2·k + t), and id 0 is the identity. The types apply in the order
given, the inverse in reverse order. rot90, transpose and flip together are refused: any two
of them already give the 8 symmetries of the square, so the 16 ids would name each twice.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
from einops import rearrange

SIZES = {"rot90": 4, "transpose": 2, "flip": 2, "channels": 6, "jigsaw": 24}  # values per type
AUGMENTATIONS = tuple(SIZES)  # the type names, in the order the docs list them
SQUARE = ("rot90", "transpose")  # types that need H == W
CHANNEL_ORDERS = list(itertools.permutations(range(3)))  # id 0: (0, 1, 2)
TILE_ORDERS = list(itertools.permutations(range(4)))  # tiles in raster order; id 0: (0, 1, 2, 3)


def check_names(augmentations: Sequence[str]) -> tuple[str, ...]:
    """Augmentation type names, known, each once, not redundant -> a tuple; a clear error otherwise."""
    if isinstance(augmentations, str) or not all(isinstance(name, str) for name in augmentations):
        raise ValueError(f"augmentations must be a sequence of names out of {list(AUGMENTATIONS)}, "
                         f"got {augmentations!r}")
    names = tuple(augmentations)
    unknown = [name for name in names if name not in SIZES]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; known: {list(AUGMENTATIONS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"augmentations {list(names)} name a type twice")
    if {"rot90", "transpose", "flip"} <= set(names):
        raise ValueError("rot90, transpose and flip together name each of the square's 8 symmetries twice; "
                         "keep two of them (any two give all 8)")
    return names


def check_augmentations(augmentations: Sequence[str], shape: tuple[int, int, int],
                        context_shape: tuple[int, int] | None = None) -> tuple[str, ...]:
    """The augmentation types for grids of ``shape`` (C, H, W) (and a spatial context of
    ``context_shape`` (h, w), transformed with them) -> a tuple; a clear error otherwise."""
    names = check_names(augmentations)
    C, H, W = shape
    grids = [("grid", (H, W))] + ([("context", context_shape)] if context_shape is not None else [])
    for what, (h, w) in grids:
        if h != w and (square := [name for name in names if name in SQUARE]):
            raise ValueError(f"augmentation(s) {square} need a square {what}, got {h}×{w}")
        if "jigsaw" in names and (h % 2 or w % 2):
            raise ValueError(f"augmentation 'jigsaw' cuts the {what} into 2×2 tiles: it needs an even height "
                             f"and width, got {h}×{w}")
    if "channels" in names and C != 3:
        raise ValueError(f"augmentation 'channels' permutes 3 channels; these grids have C = {C}")
    return names


def num_augmentations(augmentations: Sequence[str]) -> int:
    """The ids of the product of the types, identity included (rot90 × transpose: 8)."""
    return math.prod(SIZES[name] for name in augmentations)


def digits(ids: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Ids long (B,) -> each type's value, long (B, T), for types of ``sizes`` values in order
    (the mixed-radix digits of the ids, the first type the most significant)."""
    values, rest = [], ids
    for size in reversed(sizes):
        values.append(rest % size)
        rest = rest // size
    return torch.stack(values[::-1], dim=1) if values else ids.new_zeros(len(ids), 0)


def augment(x: torch.Tensor, ids: torch.Tensor | int, augmentations: Sequence[str], *,
            inverse: bool = False) -> torch.Tensor:
    """x (B, C, H, W) of any dtype -> x with grid b transformed by augmentation ``ids[b]`` (an int:
    the same id for every grid) of the product of ``augmentations``; ``inverse`` undoes it.
    A new tensor; exact (it only moves entries)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"augment takes grids (B, C, H, W), got {getattr(x, 'shape', type(x).__name__)}")
    _, C, H, W = x.shape
    names = check_augmentations(augmentations, (C, H, W))
    count = num_augmentations(names)
    if not isinstance(ids, torch.Tensor):
        if isinstance(ids, bool) or not isinstance(ids, int):
            raise ValueError(f"ids must be an int or an integer tensor (B,), got {ids!r}")
        ids = torch.full((len(x),), ids, dtype=torch.long)
    check_ids(ids, count, len(x))
    ids = ids.to(x.device)
    out = torch.empty_like(x)
    for value in ids.unique().tolist():
        index = (ids == value).nonzero().squeeze(1)
        steps = list(zip(names, digits(torch.tensor([value]), [SIZES[name] for name in names])[0].tolist()))
        grids = x[index]
        for name, v in reversed(steps) if inverse else steps:
            grids = transform(grids, name, v, inverse)
        out[index] = grids
    return out


def check_ids(ids: torch.Tensor | None, count: int, batch: int) -> None:
    """Augmentation ids for ``batch`` grids: an integer tensor (batch,) in [0, count)."""
    if not isinstance(ids, torch.Tensor) or ids.dtype.is_floating_point or ids.dtype.is_complex \
            or ids.dtype == torch.bool or ids.shape != (batch,):
        raise ValueError(f"augmentation ids must be an integer tensor of shape ({batch},), got "
                         f"{getattr(ids, 'dtype', type(ids).__name__)} {tuple(getattr(ids, 'shape', ()))}")
    if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= count):
        raise ValueError(f"augmentation ids must lie in [0, {count}), got [{int(ids.min())}, {int(ids.max())}]")


def transform(x: torch.Tensor, name: str, value: int, inverse: bool = False) -> torch.Tensor:
    """One type's transform ``value`` (or its inverse) of x (B, C, H, W)."""
    if value == 0:
        return x
    if name == "rot90":
        return torch.rot90(x, -value if inverse else value, dims=(2, 3))
    if name == "transpose":
        return x.transpose(2, 3)
    if name == "flip":
        return x.flip(3)
    order = torch.tensor(CHANNEL_ORDERS[value] if name == "channels" else TILE_ORDERS[value], device=x.device)
    if inverse:
        order = order.argsort()
    if name == "channels":
        return x[:, order]
    tiles = rearrange(x, "b c (i h) (j w) -> b (i j) c h w", i=2, j=2)
    return rearrange(tiles[:, order], "b (i j) c h w -> b c (i h) (j w)", i=2, j=2)

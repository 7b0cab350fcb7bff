"""Generation orders of an H×W grid.

An order is a LongTensor (H·W,): a permutation of the flat positions p = h·W + w, listing
them in the order they are generated (the channels of one position stay c = 0..C-1).

    raster(2, 3)                    # tensor([0, 1, 2, 3, 4, 5])
    s_curve(2, 3)                   # tensor([0, 1, 2, 5, 4, 3])
    block_raster(2, 4, 2, 2)        # tensor([0, 1, 4, 5, 2, 3, 6, 7]): 2×2 blocks in raster order
    named_orders("s_curve", 8, H, W)  # (8, H·W): s_curve and 7 of its images under D4
    augmentation_orders(("rot90", "transpose"), H, W)  # (8, H·W): σ_a, the positions augment(x, a) holds
    known_first(order, known)       # the known positions first (completion of any region)

Raster priors have one order, ``raster(H, W)``; priors that can generate in any order
(``Prior.any_order``) take any of these, and an ensemble of orders is the uniform mixture.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from latentar.augmentations import augment, num_augmentations
from latentar.nn.attention_patterns import block_raster as _block_raster
from latentar.priors.checks import is_integer

ORDER_NAMES = ("raster", "s_curve")


def raster(H: int, W: int) -> torch.Tensor:
    """Row by row, each row left to right -> long (H·W,) on the CPU (also when a module is
    built under ``torch.device("meta")``)."""
    return torch.arange(H * W, device="cpu")


def s_curve(H: int, W: int) -> torch.Tensor:
    """Boustrophedon: row 0 left to right, row 1 right to left, ... -> long (H·W,)."""
    grid = raster(H, W).view(H, W).clone()
    grid[1::2] = grid[1::2].flip(-1)
    return grid.flatten()


def block_raster(H: int, W: int, rows: int, cols: int) -> torch.Tensor:
    """Blocks of rows×cols positions in raster order, raster inside each block (the Image
    Transformer's local 2-D order) -> long (H·W,) on the CPU; the blocks at the bottom and right
    edges are cut short where rows, cols do not divide H, W."""
    if not all(is_integer(v) and v >= 1 for v in (rows, cols)):
        raise ValueError(f"block_raster needs block rows and cols that are integers >= 1, got {(rows, cols)}")
    return _block_raster(H, W, rows, cols)


# The eight symmetries of a square grid, each acting on a grid (..., H, W); the first four
# (identity first) keep an H×W grid H×W when H != W.
SYMMETRIES: tuple[Callable[[torch.Tensor], torch.Tensor], ...] = (
    lambda g: g,                           # identity
    lambda g: g.flip(-2, -1),              # rotation by 180°
    lambda g: g.flip(-2),                  # reflection top <-> bottom
    lambda g: g.flip(-1),                  # reflection left <-> right
    lambda g: g.rot90(1, (-2, -1)),        # rotation by 90°
    lambda g: g.rot90(-1, (-2, -1)),       # rotation by 270°
    lambda g: g.transpose(-2, -1),         # transpose (main diagonal)
    lambda g: g.flip(-2, -1).transpose(-2, -1),  # anti-transpose (other diagonal)
)


def d4_variants(order: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """The images of ``order`` under the symmetries of the grid -> long (8, H·W) for a square
    grid (identity first, then the rotations by 180°, the two reflections, the rotations by
    90° and 270°, the two transposes), (4, H·W) when H != W (only the identity, the rotation
    by 180° and the two reflections map an H×W grid onto itself).

    Variant g lists g(p) for each p of ``order``: the same path, moved by the symmetry."""
    order = check_order(order, H, W)
    positions = raster(H, W).view(H, W)
    variants = []
    for symmetry in SYMMETRIES[:8 if H == W else 4]:
        moved = symmetry(positions).flatten()  # moved[q] = the position that lands on q
        variants.append(ranks(moved)[order])  # where each position of the order lands
    return torch.stack(variants)


def named_orders(name: str, num: int, H: int, W: int) -> torch.Tensor:
    """The first ``num`` distinct D4 variants of the order called ``name`` ("raster" or
    "s_curve") -> long (num, H·W); the first is the order itself."""
    if name not in ORDER_NAMES:
        raise ValueError(f"unknown order {name!r}; known orders: {list(ORDER_NAMES)}")
    base = raster(H, W) if name == "raster" else s_curve(H, W)
    distinct = _distinct_rows(d4_variants(base, H, W))
    if not is_integer(num) or not 1 <= num <= len(distinct):
        raise ValueError(f"num_orders must be an integer in [1, {len(distinct)}] for {name!r} on a "
                         f"{H}×{W} grid ({len(distinct)} distinct symmetric variants), got {num!r}")
    return distinct[:num]


def augmentation_orders(augmentations: tuple[str, ...], H: int, W: int) -> torch.Tensor:
    """σ_a for every id a of the spatial ``augmentations`` (``latentar.augmentations``; not
    "channels") -> long (num_augmentations, H·W) on the CPU: row a lists, slot by raster slot,
    the position of the original grid that augment(x, a) holds there, so generating
    augment(x, a) in raster order generates x in the order σ_a (row 0: raster)."""
    if "channels" in augmentations:
        raise ValueError("augmentation 'channels' permutes channels, not positions: it has no order of positions")
    count = num_augmentations(augmentations)
    positions = raster(H, W).view(1, 1, H, W).expand(count, 1, H, W)
    return augment(positions, torch.arange(count), augmentations).flatten(1)


def _distinct_rows(rows: torch.Tensor) -> torch.Tensor:
    """The rows (N, L) without repeats, first occurrences kept in their order."""
    kept: list[torch.Tensor] = []
    for row in rows:
        if not any(torch.equal(row, other) for other in kept):
            kept.append(row)
    return torch.stack(kept)


def known_first(order: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """``order`` with the positions of the bool mask ``known`` (H, W) first, then the rest,
    each part in its relative order in ``order`` (a stable partition) -> long (H·W,)."""
    H, W = check_known(known)
    order = check_order(order, H, W)
    is_known = known.flatten()[order]  # (H·W,) bool, in order
    return torch.cat([order[is_known], order[~is_known]])


def known_prefix(order: torch.Tensor, known: torch.Tensor) -> int | None:
    """How many positions the bool mask ``known`` (H, W) gives when they are the first ones of
    ``order`` (a prefix), else None."""
    H, W = check_known(known)
    is_known = known.flatten()[check_order(order, H, W)]  # (H·W,) bool, in order
    count = int(is_known.sum())
    return count if bool(is_known[:count].all()) else None


def ranks(order: torch.Tensor) -> torch.Tensor:
    """The step at which each position is generated: ranks(order)[order[t]] = t -> long (H·W,)."""
    return torch.empty_like(order).scatter_(0, order, torch.arange(len(order), device=order.device))


def check_order(order: Any, H: int, W: int) -> torch.Tensor:
    """``order`` if it is an order of an H×W grid: a LongTensor (H·W,) holding each of
    0..H·W-1 once; else a ValueError saying what is wrong."""
    if not isinstance(order, torch.Tensor) or order.dtype != torch.long:
        got = f"a {order.dtype} tensor" if isinstance(order, torch.Tensor) else f"a {type(order).__name__}"
        raise ValueError(f"an order must be a LongTensor ({H * W},) of the flat positions h·W + w, got {got}")
    if order.shape != (H * W,):
        raise ValueError(f"an order of a {H}×{W} grid must have shape ({H * W},), got {tuple(order.shape)}")
    if not torch.equal(order.sort().values, torch.arange(H * W, device=order.device)):
        raise ValueError(f"an order of a {H}×{W} grid must hold each position 0..{H * W - 1} exactly once "
                         f"(a permutation)")
    return order


def check_known(known: Any) -> tuple[int, int]:
    """(H, W) of a known mask, a bool tensor (H, W); else a ValueError."""
    if not isinstance(known, torch.Tensor) or known.dtype != torch.bool or known.dim() != 2:
        got = (f"a {known.dtype} tensor of shape {tuple(known.shape)}" if isinstance(known, torch.Tensor)
               else f"a {type(known).__name__}")
        raise ValueError(f"a known mask must be a bool tensor (H, W), True where the symbol is given; got {got}")
    H, W = known.shape
    return H, W

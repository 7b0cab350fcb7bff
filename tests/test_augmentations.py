"""``latentar.augment``: every id is an exact, invertible rearrangement; each type alone (and
rot90 × transpose, the square's 8 symmetries) is a group; bad types and ids are refused clearly."""

from __future__ import annotations

import itertools

import pytest
import torch

import latentar
from latentar.augmentations import AUGMENTATIONS, SIZES, num_augmentations

SINGLE = [(name,) for name in AUGMENTATIONS]
PRODUCTS = [("rot90", "transpose"), ("transpose", "flip"), ("rot90", "channels", "jigsaw"), ("jigsaw", "flip")]


def distinct_grids(dtype: torch.dtype = torch.long) -> torch.Tensor:
    """Two 3×4×4 grids whose entries all differ, so any rearrangement shows."""
    return torch.randperm(96, generator=torch.Generator().manual_seed(0)).view(2, 3, 4, 4).to(dtype)


@pytest.mark.parametrize("types", SINGLE + PRODUCTS, ids="-".join)
@pytest.mark.parametrize("dtype", [torch.long, torch.uint8])
def test_every_id_is_an_exact_invertible_rearrangement(types, dtype):
    x = distinct_grids(dtype)
    count = num_augmentations(types)
    seen = set()
    for a in range(count):
        y = latentar.augment(x, a, types)
        assert y.dtype == dtype and y.shape == x.shape
        assert torch.equal(y.flatten(1).sort(1).values, x.flatten(1).sort(1).values), "values changed"
        assert torch.equal(latentar.augment(y, a, types, inverse=True), x), f"id {a} is not undone"
        assert torch.equal(y, x) == (a == 0), "only id 0 is the identity"
        seen.add(tuple(y.flatten().tolist()))
    assert len(seen) == count, "two ids name the same transform"


@pytest.mark.parametrize("types", SINGLE + [("rot90", "transpose"), ("rot90", "flip")], ids="-".join)
def test_a_type_composes_within_itself(types):
    """Closure: doing id a then id b is some id c, and every id has an inverse id."""
    x = distinct_grids()
    count = num_augmentations(types)
    table = {tuple(latentar.augment(x, c, types).flatten().tolist()): c for c in range(count)}
    for a, b in itertools.product(range(count), repeat=2):
        twice = latentar.augment(latentar.augment(x, a, types), b, types)
        assert tuple(twice.flatten().tolist()) in table, f"{types}: {a} then {b} is no id"


def test_rotations_add_up_and_ids_are_mixed_radix():
    x = distinct_grids()
    for a, b in itertools.product(range(4), repeat=2):
        assert torch.equal(latentar.augment(latentar.augment(x, a, ("rot90",)), b, ("rot90",)),
                           latentar.augment(x, (a + b) % 4, ("rot90",)))
    assert torch.equal(latentar.augment(x, 1, ("rot90",)), torch.rot90(x, 1, dims=(2, 3)))
    # rot90 × transpose: id = 2·k + t, transpose applied after the rotation
    assert torch.equal(latentar.augment(x, 2 * 3 + 1, ("rot90", "transpose")),
                       torch.rot90(x, 3, dims=(2, 3)).transpose(2, 3))
    assert torch.equal(latentar.augment(x, 1, ("flip",)), x.flip(3))
    assert torch.equal(latentar.augment(x, 1, ("channels",)), x[:, [0, 2, 1]])


def test_one_id_per_grid():
    x = distinct_grids()
    ids = torch.tensor([3, 5])
    y = latentar.augment(x, ids, ("rot90", "transpose"))
    for b in range(2):
        assert torch.equal(y[b:b + 1], latentar.augment(x[b:b + 1], int(ids[b]), ("rot90", "transpose")))
    assert torch.equal(latentar.augment(y, ids, ("rot90", "transpose"), inverse=True), x)


def test_jigsaw_moves_whole_tiles():
    x = distinct_grids()
    y = latentar.augment(x, SIZES["jigsaw"] - 1, ("jigsaw",))  # tiles in reverse order (3, 2, 1, 0)
    assert torch.equal(y[..., :2, :2], x[..., 2:, 2:]) and torch.equal(y[..., 2:, :2], x[..., :2, 2:])


@pytest.mark.parametrize("types, shape, message", [
    (("rot90", "spin"), (1, 4, 4), "unknown augmentation|augmentations must be a list of strings out of"),
    (("flip", "flip"), (1, 4, 4), "twice"),
    (("rot90", "transpose", "flip"), (1, 4, 4), "keep two"),
    (("transpose",), (1, 4, 6), "square grid"),
    (("channels",), (1, 4, 4), "C = 1"),
    (("jigsaw",), (1, 3, 3), "even"),
    ("rot90", (1, 4, 4), "sequence of names|augmentations must be a list"),
])
def test_bad_types_are_refused(types, shape, message):
    with pytest.raises(ValueError, match=message):
        latentar.augment(torch.zeros(2, *shape, dtype=torch.long), 0, types)
    with pytest.raises(ValueError, match=message):
        latentar.build_prior("pixelcnn", shape, 2, preset="tiny", augmentations=types)


def test_bad_ids_are_refused():
    x = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"in \[0, 8\)"):
        latentar.augment(x, torch.tensor([0, 8]), ("rot90", "transpose"))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        latentar.augment(x, torch.tensor([0]), ("rot90",))
    with pytest.raises(ValueError, match="integer tensor"):
        latentar.augment(x, torch.tensor([0.0, 1.0]), ("rot90",))

"""Generation orders (``latentar.priors.orders``): permutations, the S-curve, the D4 variants,
known-first reordering, ranks and the checks."""

import pytest
import torch

from latentar.priors.orders import (
    check_order,
    d4_variants,
    known_first,
    known_prefix,
    named_orders,
    ranks,
    raster,
    s_curve,
)

SHAPES = [(1, 1), (1, 5), (2, 3), (3, 3), (4, 4), (3, 5)]


def is_permutation(order, size):
    return order.dtype == torch.long and torch.equal(order.sort().values, torch.arange(size))


@pytest.mark.parametrize("H, W", SHAPES)
def test_every_order_is_a_permutation(H, W):
    for base in (raster(H, W), s_curve(H, W)):
        assert is_permutation(base, H * W)
        for variant in d4_variants(base, H, W):
            assert is_permutation(variant, H * W)


def test_s_curve_by_hand():
    assert s_curve(3, 4).tolist() == [0, 1, 2, 3, 7, 6, 5, 4, 8, 9, 10, 11]
    assert raster(2, 3).tolist() == [0, 1, 2, 3, 4, 5]


def moves(order, H, W):
    """Each step of an order as (dh, dw) between consecutive positions."""
    h, w = order // W, order % W
    return list(zip((h[1:] - h[:-1]).tolist(), (w[1:] - w[:-1]).tolist()))


@pytest.mark.parametrize("H, W", [(3, 3), (4, 4), (2, 3), (3, 5)])
def test_d4_variants_are_the_group_images(H, W):
    """Identity first; all distinct for an S-curve; each variant is the same path moved by a
    symmetry: its steps are the S-curve's steps under one fixed linear map of (dh, dw)."""
    base = s_curve(H, W)
    variants = d4_variants(base, H, W)
    assert variants.shape == ((8 if H == W else 4), H * W)
    assert torch.equal(variants[0], base)
    assert len({tuple(v.tolist()) for v in variants}) == len(variants)
    maps = set()
    for variant in variants:
        pairs = set(zip(moves(base, H, W), moves(variant, H, W)))
        steps = dict(pairs)
        assert len(steps) == len(pairs)  # one image per kind of step: a fixed map
        # the map is linear on the unit steps: it sends (0, 1) and (1, 0) to unit steps
        assert all(abs(a) + abs(b) == 1 for a, b in steps.values())
        maps.add(tuple(sorted(steps.items())))
    assert len(maps) == len(variants)


def test_d4_variants_of_a_square_match_the_rotations():
    """Variant 4 is the order moved by a quarter turn: rotating the grid of ranks gives it."""
    H = W = 3
    base = s_curve(H, W)
    variants = d4_variants(base, H, W)
    turned = ranks(base).view(H, W).rot90(1).flatten()  # turned[q] = step at which q is reached
    assert torch.equal(ranks(variants[4]), turned)


def test_named_orders():
    assert torch.equal(named_orders("raster", 1, 4, 4), raster(4, 4)[None])
    eight = named_orders("s_curve", 8, 4, 4)
    assert eight.shape == (8, 16) and torch.equal(eight[0], s_curve(4, 4))
    assert named_orders("raster", 4, 2, 3).shape == (4, 6)
    with pytest.raises(ValueError, match=r"num_orders must be an integer in \[1, 4\]"):
        named_orders("raster", 5, 2, 3)
    with pytest.raises(ValueError, match=r"in \[1, 2\]"):  # a row has two distinct variants
        named_orders("raster", 3, 1, 4)
    with pytest.raises(ValueError, match="unknown order 'zigzag'"):
        named_orders("zigzag", 1, 2, 2)


def test_known_first_is_a_stable_partition():
    torch.manual_seed(0)
    H, W = 4, 5
    order = torch.randperm(H * W)
    known = torch.rand(H, W) < 0.4
    moved = known_first(order, known)
    assert is_permutation(moved, H * W)
    count = int(known.sum())
    first, rest = moved[:count], moved[count:]
    assert known.flatten()[first].all() and not known.flatten()[rest].any()
    position = ranks(order)
    assert (position[first].diff() > 0).all() and (position[rest].diff() > 0).all()
    assert known_prefix(moved, known) == count


def test_known_prefix():
    known = torch.zeros(3, 4, dtype=torch.bool)
    known[0] = True
    known[1, :2] = True
    assert known_prefix(raster(3, 4), known) == 6
    assert known_prefix(s_curve(3, 4), known) is None  # row 1 runs right to left
    known[1] = torch.tensor([False, False, True, True])
    assert known_prefix(s_curve(3, 4), known) == 6
    assert known_prefix(raster(3, 4), torch.zeros(3, 4, dtype=torch.bool)) == 0


def test_ranks_invert_the_order():
    order = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    assert torch.equal(order[ranks(order)], torch.arange(12))
    assert torch.equal(ranks(order)[order], torch.arange(12))


@pytest.mark.parametrize("order, message", [
    ([0, 1, 2, 3], "LongTensor"),
    (torch.arange(4, dtype=torch.int32), "got a torch.int32 tensor"),
    (torch.arange(5), r"must have shape \(4,\)"),
    (torch.tensor([0, 1, 1, 3]), "exactly once"),
    (torch.tensor([0, 1, 2, 4]), "exactly once"),
])
def test_check_order_names_the_problem(order, message):
    with pytest.raises(ValueError, match=message):
        check_order(order, 2, 2)


def test_known_masks_are_checked():
    with pytest.raises(ValueError, match="a known mask must be a bool tensor"):
        known_first(raster(2, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        known_first(raster(2, 2), torch.ones(2, 3, dtype=torch.bool))

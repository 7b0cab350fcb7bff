"""Regions named on the command line (latentar.masks): halves, centre, random, pixel boxes, PNGs,
and how a pixel region lands on a code grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from latentar.masks import region


def rows_cols(mask: torch.Tensor) -> tuple[list[int], list[int]]:
    return mask.any(1).nonzero().flatten().tolist(), mask.any(0).nonzero().flatten().tolist()


@pytest.mark.parametrize("name, rows, cols", [("top", [0, 1, 2], list(range(6))), ("bottom", [2, 3, 4], list(range(6))),
                                              ("left", list(range(5)), [0, 1, 2]), ("right", list(range(5)), [3, 4, 5]),
                                              ("centre", [1, 2], [1, 2, 3])])
def test_named_regions_on_a_5_by_6_grid(name, rows, cols):
    mask = region(name, (5, 6), (5, 6))
    assert rows_cols(mask) == (rows, cols)
    assert int(mask.sum()) == len(rows) * len(cols)  # a rectangle


def test_halves_of_an_odd_side_share_the_middle_and_cover_the_grid():
    top, bottom = region("top", (7, 7), (7, 7)), region("bottom", (7, 7), (7, 7))
    assert (top | bottom).all() and (top & bottom).nonzero()[:, 0].unique().tolist() == [3]


def test_named_regions_lie_on_the_modelled_grid_and_boxes_on_pixels():
    assert region("centre", (28, 28), (7, 7)).sum() == 9  # the central 3×3 codes
    box = region("box:4,4,9,8", (28, 28), (7, 7))  # pixel rows 4..8, columns 4..7 touch code rows 1, 2 and column 1
    assert rows_cols(box) == ([1, 2], [1])


def test_random_regions_are_seeded_and_never_empty():
    a, b = region("random:0.3", (8, 8), (8, 8), seed=1), region("random:0.3", (8, 8), (8, 8), seed=1)
    assert torch.equal(a, b) and 5 <= int(a.sum()) <= 35
    assert region("random:0.0001", (2, 2), (2, 2)).sum() == 1


def test_a_png_mask_of_the_image_size(tmp_path):
    pixels = np.zeros((8, 8), np.uint8)
    pixels[2:4, 5:] = 255
    Image.fromarray(pixels).save(tmp_path / "mask.png")
    mask = region(str(tmp_path / "mask.png"), (8, 8), (4, 4))
    assert rows_cols(mask) == ([1], [2, 3])
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match="is 6×8; the images are 8×8"):
        region(str(tmp_path / "small.png"), (8, 8), (8, 8))


@pytest.mark.parametrize("spec, message", [
    ("middle", "is not a region"), ("random:2", r"fraction must lie in \(0, 1\]"), ("random:x", "is not a number"),
    ("box:1,2,3", "four integers"), ("box:0,0,9,2", r"need 0 <= R0 < R1 <= 8"), ("box:a,0,1,1", "is not an integer"),
    ("missing.png", "not a readable PNG")])
def test_bad_specs_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        region(spec, (8, 8), (8, 8))


def test_a_pixel_region_needs_a_grid_that_divides_the_image():
    with pytest.raises(ValueError, match="do not split into the 3×3 grid"):
        region("box:0,0,2,2", (8, 8), (3, 3))

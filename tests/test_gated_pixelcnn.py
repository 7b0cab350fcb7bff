"""Gated PixelCNN: no blind spot, and fast sampling identical to the naive loop."""

from __future__ import annotations

import pytest
import torch
from prior_cases import tiny_prior
from test_fast_sampling import assert_same_draws
from test_pixelcnn import assert_stepper_matches_full_pass

import latentar
from latentar.receptive_field import raster_past, receptive_field


def test_receptive_field_has_no_blind_spot():
    """Four 3×3 layers: the gated stacks reach every earlier pixel of a 7×7 image,
    plain stacked mask-B convolutions miss the region up and to the right."""
    shape, position = (1, 7, 7), (3, 3)
    earlier = raster_past(shape, position)
    gated = tiny_prior("gated_pixelcnn", shape, 4, num_layers=4, first_kernel=3, kernel=3)
    field = receptive_field(gated, position)
    assert torch.equal(field, earlier), f"gated field vs the raster past:\n{field.int() - earlier.int()}"

    plain = tiny_prior("pixelcnn", shape, 4, num_blocks=3, first_kernel=3, kernel=3)
    field = receptive_field(plain, position)
    blind = [(2, 5), (2, 6), (1, 6)]  # (h - 1, w + 2) and beyond: no chain of 3×3 mask-B taps
    assert not any(field[p] for p in blind)
    assert all(field[p] for p in [(2, 4), (0, 0), (3, 0)])


@pytest.mark.parametrize("shape, K, kwargs", [
    ((1, 5, 6), 4, dict(symbols="codes", embed_dim=3, num_layers=4, first_kernel=7, kernel=5)),
    ((3, 3, 4), 8, dict(num_layers=3, first_kernel=5, kernel=3)),
], ids=["codes-wide-kernels", "rgb-three-layers"])
def test_fast_sampling_matches_naive(shape, K, kwargs):
    """Beyond the shared suite's cases: wider kernels and several layers."""
    prior = tiny_prior("gated_pixelcnn", shape, K, **kwargs)
    assert_same_draws(prior, 5, None)


def test_stepper_params_match_the_full_pass():
    """Every layer's caches, including the first horizontal conv's input pixel, whose last
    channel is drawn after its last params call."""
    g = torch.Generator().manual_seed(2)
    prior = tiny_prior("gated_pixelcnn", (3, 3, 4), 8, num_classes=4, num_layers=3, first_kernel=5)
    assert_stepper_matches_full_pass(prior, torch.randint(0, 8, (4, 3, 3, 4), generator=g), torch.arange(4))
    codes = tiny_prior("gated_pixelcnn", (1, 5, 6), 4, symbols="codes", embed_dim=3, num_layers=4,
                       first_kernel=7, kernel=5)
    assert_stepper_matches_full_pass(codes, torch.randint(0, 4, (3, 1, 5, 6), generator=g))


def test_fast_sampling_matches_naive_rgb_with_classes():
    prior = tiny_prior("gated_pixelcnn", (3, 3, 3), 6, num_classes=4, num_layers=3)
    assert_same_draws(prior, 4, torch.tensor([0, 1, 2, 3]))
    assert_same_draws(prior, 3, 2)


def test_bad_architecture_names_the_problem():
    with pytest.raises(ValueError, match="odd kernel size, got 4"):
        latentar.build_prior("gated_pixelcnn", (1, 4, 4), 4, kernel=4)
    with pytest.raises(ValueError, match=r"gated_pixelcnn.num_layers must be an integer in \[1, 1024\], got 0"):
        latentar.build_prior("gated_pixelcnn", (1, 4, 4), 4, num_layers=0)
    rgb = latentar.build_prior("gated_pixelcnn", (3, 4, 4), 256, head="logistic_mixture")
    assert rgb.head.per_channel  # channel-masked RGB: a mixture per channel, not a refusal

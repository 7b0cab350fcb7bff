"""Gated PixelCNN: no blind spot, and fast sampling identical to the naive loop."""

from __future__ import annotations

import pytest
import torch

import latentar
from prior_cases import tiny_prior
from test_fast_sampling import assert_same_draws


def input_gradient(prior, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """|d log p(x_{0,h,w}) / d input| summed over the batch and embedding -> (H, W)."""
    z = prior.input(x).detach().requires_grad_()  # (B, E, H, W)
    lp = prior.head.log_prob(prior.network(z, None, None), x)  # (B, 1, H, W)
    (grad,) = torch.autograd.grad(lp[:, 0, h, w].sum(), z)
    return grad.abs().sum((0, 1))


def test_receptive_field_has_no_blind_spot():
    """Four 3×3 layers: the gated stacks reach every earlier pixel of a 7×7 image,
    plain stacked mask-B convolutions miss the region up and to the right."""
    H = W = 7
    h, w = 3, 3
    x = torch.randint(0, 4, (8, 1, H, W), generator=torch.Generator().manual_seed(0))
    earlier = (torch.arange(H * W) < h * W + w).view(H, W)
    gated = tiny_prior("gated_pixelcnn", (1, H, W), 4, num_layers=4, first_kernel=3, kernel=3)
    grad = input_gradient(gated, x, h, w)
    assert (grad[earlier] > 0).all(), f"unreached earlier pixels:\n{(grad == 0) & earlier}"
    assert (grad[~earlier] == 0).all()

    plain = tiny_prior("pixelcnn", (1, H, W), 4, num_blocks=3, first_kernel=3, kernel=3)
    grad = input_gradient(plain, x, h, w)
    blind = [(2, 5), (2, 6), (1, 6)]  # (h - 1, w + 2) and beyond: no chain of 3×3 mask-B taps
    assert all(grad[p] == 0 for p in blind)
    assert all(grad[p] > 0 for p in [(2, 4), (0, 0), (3, 0)])


@pytest.mark.parametrize("shape, K, kwargs", [
    ((1, 5, 6), 4, dict(symbols="codes", embed_dim=3, num_layers=4, first_kernel=7, kernel=5)),
    ((3, 3, 4), 8, dict(num_layers=3, first_kernel=5, kernel=3)),
], ids=["codes-wide-kernels", "rgb-three-layers"])
def test_fast_sampling_matches_naive(shape, K, kwargs):
    """Beyond the shared suite's cases: wider kernels and several layers."""
    prior = tiny_prior("gated_pixelcnn", shape, K, **kwargs)
    assert_same_draws(prior, 5, None)


def test_fast_sampling_matches_naive_rgb_with_classes():
    prior = tiny_prior("gated_pixelcnn", (3, 3, 3), 6, num_classes=4, num_layers=3)
    assert_same_draws(prior, 4, torch.tensor([0, 1, 2, 3]))
    assert_same_draws(prior, 3, 2)


def test_bad_architecture_names_the_problem():
    with pytest.raises(ValueError, match="odd kernel size, got 4"):
        latentar.build_prior("gated_pixelcnn", (1, 4, 4), 4, kernel=4)
    with pytest.raises(ValueError, match="num_layers must be >= 1, got 0"):
        latentar.build_prior("gated_pixelcnn", (1, 4, 4), 4, num_layers=0)
    with pytest.raises(ValueError, match="channel-masked backbone must use it with 1 channel"):
        latentar.build_prior("gated_pixelcnn", (3, 4, 4), 256, head="logistic_mixture")

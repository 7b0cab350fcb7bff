"""PixelCNN's fast stepper: per-position layers from cached maps == the full pass."""

from __future__ import annotations

import pytest
import torch
from prior_cases import tiny_prior
from test_fast_sampling import TOL, assert_same_draws

CONFIGS = [  # (shape, K, head, extra build arguments)
    ((3, 3, 4), 5, "categorical", {}),
    ((1, 4, 3), 256, "logistic_mixture", dict(head_options={"num_mixtures": 2})),
    ((1, 3, 5), 6, "categorical", dict(symbols="codes", embed_dim=3, num_classes=2)),
]


def assert_stepper_matches_full_pass(prior, x: torch.Tensor, cond=None) -> None:
    """Walk the prior's fast stepper as the driver does, writing the symbols of x (B, C, H, W)
    into a grid of other random symbols one draw at a time: its params at every position and
    channel (channel c's block of params) equal the full pass's on x within TOL + TOL·|p|."""
    cond = prior.check_inputs(x, cond)
    C, H, W = prior.spec.shape
    size = prior.head.num_params // C  # a channel-masked backbone's params: C blocks, R→G→B
    grid = torch.randint_like(x, prior.spec.num_symbols)  # what the stepper reads: x up to each draw
    with torch.inference_mode():
        full = prior(x, cond)  # (B, P, H, W)
        stepper = type(prior).Stepper(prior, grid, cond, None)
        for h in range(H):
            for w in range(W):
                for c in range(C) if prior.channel_masked else [None]:
                    block = slice(None) if c is None else slice(c * size, (c + 1) * size)  # channel c's params
                    expected = full[:, block, h, w]
                    err = (stepper.params(h, w, c)[:, block] - expected).abs() - TOL * expected.abs()
                    assert err.max() <= TOL, f"params at (h, w, c) = {(h, w, c)} differ from the full pass"
                    drawn = slice(None) if c is None else slice(c, c + 1)
                    grid[:, drawn, h, w] = x[:, drawn, h, w]
                stepper.take(h, w)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c[0]}-{c[2]}")
def test_stepper_params_match_the_full_pass(config):
    shape, K, head, extra = config
    prior = tiny_prior("pixelcnn", shape, K, head, **extra)
    x = torch.randint(0, K, (3, *shape))
    labels = torch.tensor([0, 1, 1]) if extra.get("num_classes") else None
    assert_stepper_matches_full_pass(prior, x, labels)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c[0]}-{c[2]}")
def test_fast_sampling_equals_naive_sampling(config):
    shape, K, head, extra = config
    prior = tiny_prior("pixelcnn", shape, K, head, **extra)
    cond = 1 if extra.get("num_classes") else None
    for draw in (dict(), dict(temperature=0.7, top_k=3)):
        assert_same_draws(prior, 5, cond, **draw)

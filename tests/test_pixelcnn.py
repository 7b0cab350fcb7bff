"""PixelCNN's incremental sampler: per-position layers from cached maps == the full pass."""

from __future__ import annotations

import pytest
import torch

from prior_cases import tiny_prior
from test_fast_sampling import assert_same_draws

CONFIGS = [  # (shape, K, head, extra build arguments)
    ((3, 3, 4), 5, "categorical", {}),
    ((1, 4, 3), 256, "logistic_mixture", dict(head_options={"num_mixtures": 2})),
    ((1, 3, 5), 6, "categorical", dict(symbols="codes", embed_dim=3, num_classes=2)),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c[0]}-{c[2]}")
def test_incremental_params_match_the_full_pass(config):
    shape, K, head, extra = config
    prior = tiny_prior("pixelcnn", shape, K, head, **extra)
    x = torch.randint(0, K, (3, *shape))  # the future of each step is random: it must be ignored
    labels = torch.tensor([0, 1, 1]) if extra.get("num_classes") else None
    with torch.no_grad():
        full = prior(x, labels)  # (3, P, H, W)
        order = [(h, w, c) for h, w, c, params in prior.incremental_params(x, labels)
                 if torch.allclose(params, full[:, :, h, w], atol=1e-4, rtol=1e-5)]
    C, H, W = shape
    assert order == [(h, w, c) for h in range(H) for w in range(W) for c in range(C)]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c[0]}-{c[2]}")
def test_fast_sampling_equals_naive_sampling(config):
    shape, K, head, extra = config
    prior = tiny_prior("pixelcnn", shape, K, head, **extra)
    cond = 1 if extra.get("num_classes") else None
    for draw in (dict(), dict(temperature=0.7, top_k=3)):
        assert_same_draws(prior, 5, cond, **draw)

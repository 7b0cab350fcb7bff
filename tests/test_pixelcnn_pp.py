"""PixelCNN++: shifted layers, the fast stepper against the full pass, and fast sampling == naive."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from prior_cases import tiny_prior
from test_fast_sampling import assert_same_draws
from test_pixelcnn import assert_stepper_matches_full_pass

import latentar
from latentar.nn.shifted import (
    down_right_shifted_conv,
    down_right_shifted_deconv,
    down_shifted_conv,
    down_shifted_deconv,
)
from latentar.nn.stepping import conv_parts
from latentar.nn.windows import conv_transpose_window, conv_window
from latentar.priors import Condition

CONFIGS = [  # (shape, K, head, extra build arguments)
    ((3, 4, 4), 256, "logistic_mixture", dict(head_options={"num_mixtures": 3})),
    ((1, 5, 3), 6, "categorical", dict(symbols="codes", embed_dim=3, stages=3)),
    ((3, 3, 5), 4, "categorical", dict(num_classes=2, stages=3)),
    ((1, 1, 1), 4, "logistic_mixture", dict(stages=3)),
]


@pytest.mark.parametrize("make", [
    lambda: down_shifted_conv(3, 4, (2, 3)), lambda: down_shifted_conv(3, 4, (2, 3), shift=True),
    lambda: down_shifted_conv(3, 4, (1, 3), shift=True), lambda: down_shifted_conv(3, 4, stride=2),
    lambda: down_right_shifted_conv(3, 4), lambda: down_right_shifted_conv(3, 4, (2, 1), shift_right=True),
    lambda: down_right_shifted_conv(3, 4, stride=2)])
def test_conv_windows_match_the_whole_map(make):
    torch.manual_seed(0)
    conv = make()
    x = torch.randn(2, 3, 5, 7)
    full = conv(x)  # (2, 4, H', W')
    parts = conv_parts(conv)
    padded = F.pad(x, parts.pad)
    for i in range(full.shape[2]):
        assert torch.allclose(conv_window(parts, padded, i), full[:, :, i:i + 1], atol=1e-6)
        for j in range(full.shape[3]):
            assert torch.allclose(conv_window(parts, padded, i, j), full[:, :, i:i + 1, j:j + 1], atol=1e-6)


@pytest.mark.parametrize("make", [down_shifted_deconv, down_right_shifted_deconv])
def test_transposed_windows_match_the_whole_map(make):
    torch.manual_seed(0)
    deconv = make(3, 4)
    x = torch.randn(2, 3, 3, 4)
    size = (5, 7)  # odd sizes are cropped from 2·(3, 4)
    full = deconv(x, size)
    assert full.shape == (2, 4, *size)
    for i in range(size[0]):
        row = conv_transpose_window(deconv, x, i, width=size[1])
        assert torch.allclose(row, full[:, :, i:i + 1], atol=1e-6)
        for j in range(size[1]):
            at = conv_transpose_window(deconv, x, i, j)
            assert torch.allclose(at, full[:, :, i:i + 1, j:j + 1], atol=1e-6)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c[0]}-{c[2]}")
def test_stepper_params_match_the_full_pass(config):
    shape, K, head, extra = config
    prior = tiny_prior("pixelcnn_pp", shape, K, head, **extra)
    x = torch.randint(0, K, (3, *shape))
    labels = torch.tensor([0, 1, 1]) if extra.get("num_classes") else None
    assert_stepper_matches_full_pass(prior, x, labels)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c[0]}-{c[2]}")
def test_fast_sampling_equals_naive_sampling(config):
    shape, K, head, extra = config
    prior = tiny_prior("pixelcnn_pp", shape, K, head, **extra)
    cond = 1 if extra.get("num_classes") else None
    for draw in (dict(), dict(temperature=0.7, top_k=3)):
        assert_same_draws(prior, 5, cond, **draw)


def test_receptive_field_covers_the_whole_past():
    """Every earlier pixel, including those up and to the right, reaches the last one."""
    C, H, W = 1, 5, 5
    prior = tiny_prior("pixelcnn_pp", (C, H, W), 4)
    x = torch.randint(0, 4, (1, C, H, W))
    z = prior.input(x).requires_grad_()
    lp = prior.head.log_prob(prior.network(z, Condition()), x)
    for h, w in [(H - 1, W - 1), (2, 0), (1, 2)]:
        (grad,) = torch.autograd.grad(lp[0, 0, h, w], z, retain_graph=True)
        seen = grad[0, 0].abs() > 0  # (H, W)
        past = torch.arange(H * W).view(H, W) < h * W + w
        assert torch.equal(seen, past), f"position {(h, w)} sees\n{seen.int()}"


def test_paper_preset_and_sizes():
    with torch.device("meta"):  # the configuration only: no memory, no initialisation
        prior = latentar.build_prior("pixelcnn_pp", (3, 32, 32), 256, "logistic_mixture", preset="paper")
    assert sum(p.numel() for p in prior.parameters()) == 53_618_660  # the paper reports about 53M
    assert prior.levels() == [(32, 32), (16, 16), (8, 8)]
    assert prior.head.num_params == 10 * (1 + 2 * 3 + 3)
    assert len(prior.gated) == 2 * (5 * 3 + 5 + 6 + 6)
    assert (prior.arch.filters, prior.arch.dropout) == (160, 0.5)
    small = latentar.build_prior("pixelcnn_pp", (1, 28, 28), 2, preset="small")
    assert small.levels() == [(28, 28), (14, 14), (7, 7)]
    assert small(torch.randint(0, 2, (2, 1, 28, 28))).shape == (2, 2, 28, 28)


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="pixelcnn_pp.stages must be an integer >= 1, got 0"):
        latentar.build_prior("pixelcnn_pp", (1, 4, 4), 4, stages=0)
    with pytest.raises(ValueError, match=r"pixelcnn_pp.dropout must be a finite number in \[0, 1\), got 1.5"):
        latentar.build_prior("pixelcnn_pp", (1, 4, 4), 4, dropout=1.5)
    with pytest.raises(ValueError, match="odd kernel width"):
        down_shifted_conv(2, 2, (2, 2))

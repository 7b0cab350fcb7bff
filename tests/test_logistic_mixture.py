"""The discretized logistic mixture head: exact bins, normalization, stability, sampling."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import latentar
from latentar.heads.logistic_mixture import (
    TINY_BIN,
    LogisticMixtureHead,
    discretized_logistic_log_prob,
    every_bin_log_prob,
)


def random_params(head: LogisticMixtureHead, n: int = 1, seed: int = 0, dtype=torch.float64):
    """params (n, P, 1, 1) with means in about [-1.5, 1.5] and scales in [e^-3, e^0]."""
    g = torch.Generator().manual_seed(seed)
    params = torch.randn(n, head.num_params, 1, 1, generator=g, dtype=dtype)
    logits, means, log_scales, _ = head.split(params)
    means.mul_(0.7)
    log_scales.uniform_(-3.0, 0.0, generator=g)
    return params


def every_pixel(channels: int, K: int) -> torch.Tensor:
    """All K^C pixels -> long (K^C, C, 1, 1)."""
    return torch.tensor(list(itertools.product(range(K), repeat=channels))).view(-1, channels, 1, 1)


def integrate_bin(mean: float, scale: float, lo: float, hi: float, points: int = 20001) -> float:
    """∫_lo^hi of the logistic density in float64 by the trapezoid rule."""
    t = torch.linspace(lo, hi, points, dtype=torch.float64)
    u = (t - mean) / scale
    pdf = torch.exp(-u - 2 * torch.nn.functional.softplus(-u)) / scale
    return torch.trapezoid(pdf, t).item()


@pytest.mark.parametrize("K", [2, 5, 16])
def test_every_bin_matches_numerical_integration(K):
    head = LogisticMixtureHead(1, K, couple_channels=False, num_mixtures=3)
    params = random_params(head, seed=K)
    logits, means, log_scales, _ = head.split(params)
    pis = torch.softmax(logits.flatten(), 0)
    half = 1.0 / (K - 1)
    tail = 40.0  # scales <= 1: the density beyond 40 scales from every mean is below e^-40
    lp = head.log_prob(params.expand(K, -1, -1, -1), torch.arange(K).view(K, 1, 1, 1)).flatten()
    for s in range(K):
        lo = -1 - tail - 2 if s == 0 else 2 * s * half - 1 - half
        hi = 1 + tail + 2 if s == K - 1 else 2 * s * half - 1 + half
        mus, scales = means.flatten().tolist(), log_scales.flatten().exp().tolist()
        points = 400001 if s in (0, K - 1) else 20001  # the edge bins span about 40 units
        ref = sum(pis[m].item() * integrate_bin(mus[m], scales[m], lo, hi, points) for m in range(3))
        assert lp[s].exp().item() == pytest.approx(ref, rel=1e-6, abs=1e-9)


def test_hand_computed_value():
    """K = 3, one component, mean 0, scale 1: P(s=1) = σ(1/2) - σ(-1/2); P(s=0) = σ(-1/2)."""
    head = LogisticMixtureHead(1, 3, couple_channels=False, num_mixtures=1)
    params = torch.tensor([0.0, 0.0, 0.0]).view(1, 3, 1, 1)  # logit, mean, log_scale
    lp = head.log_prob(params.expand(3, -1, -1, -1), torch.arange(3).view(3, 1, 1, 1)).flatten()
    sig = 1 / (1 + math.exp(-0.5))  # σ(1/2) = 0.6224593...
    assert lp.exp().tolist() == pytest.approx([1 - sig, 2 * sig - 1, 1 - sig], abs=1e-7)


@pytest.mark.parametrize("K", [2, 3, 256])
def test_bins_sum_to_one_single_channel(K):
    head = LogisticMixtureHead(1, K, couple_channels=True, num_mixtures=4)
    for seed in range(3):
        params = random_params(head, seed=seed)
        lp = head.log_prob(params.expand(K, -1, -1, -1), every_pixel(1, K))
        assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-10)


def test_rgb_triples_sum_to_one_and_match_an_independent_mixture():
    K = 4
    head = LogisticMixtureHead(3, K, couple_channels=True, num_mixtures=3)
    assert head.num_params == 3 * (1 + 2 * 3) + 3 * 3
    params = random_params(head, seed=7)
    pixels = every_pixel(3, K)  # (64, 3, 1, 1)
    lp = head.log_prob(params.expand(len(pixels), -1, -1, -1), pixels).sum((1, 2, 3))  # joint (64,)
    assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-10)
    # Reference: Σ_m π_m Π_c [σ(upper) - σ(lower)] with plain sigmoids in float64.
    p = params.flatten()
    pis = torch.softmax(p[:3], 0)
    means, log_scales = p[3:12].view(3, 3), p[12:21].view(3, 3)
    alpha, beta, gamma = torch.tanh(p[21:30]).view(3, 3)
    for index, pixel in enumerate(pixels.view(-1, 3).tolist()):
        v = [2 * s / (K - 1) - 1 for s in pixel]
        total = 0.0
        for m in range(3):
            mu = [means[0, m], means[1, m] + alpha[m] * v[0], means[2, m] + beta[m] * v[0] + gamma[m] * v[1]]
            prob = pis[m]
            for c in range(3):
                scale = log_scales[c, m].exp()
                up = torch.sigmoid((v[c] + 1 / (K - 1) - mu[c]) / scale) if pixel[c] < K - 1 else 1
                low = torch.sigmoid((v[c] - 1 / (K - 1) - mu[c]) / scale) if pixel[c] > 0 else 0
                prob = prob * (up - low)
            total += float(prob)
        assert lp[index].exp().item() == pytest.approx(total, rel=1e-9)


def test_tiny_bin_branch_is_continuous_and_exact():
    """Around the switch the midpoint rule agrees with the exact CDF difference."""
    K = 256
    half = 1 / (K - 1)
    s = torch.tensor([100])
    for width in (TINY_BIN * 0.999, TINY_BIN * 1.001):
        log_scale = torch.tensor([math.log(2 * half / width)], dtype=torch.float64)
        mean = torch.tensor([0.3], dtype=torch.float64)
        got = discretized_logistic_log_prob(s, mean, log_scale, K)
        v = 2 * 100 * half - 1
        scale = log_scale.exp()
        exact = torch.sigmoid((v + half - mean) / scale) - torch.sigmoid((v - half - mean) / scale)
        assert got.item() == pytest.approx(exact.log().item(), rel=1e-9)


@pytest.mark.parametrize("K", [2, 3, 256])
def test_every_bin_at_once_equals_one_bin_at_a_time(K):
    """The sampler's all-K evaluation (shared edges) gives each bin's value as the training
    path computes it, for sharp, ordinary, very wide (midpoint rule) and far-off logistics."""
    half = 1 / (K - 1)
    mean = torch.tensor([[0.0, 0.3, -0.9, 40.0], [0.5, -30.0, 0.0, 1.0]], dtype=torch.float64)
    log_scale = torch.tensor([[-7.0, -2.0, 0.5, 1.0],
                              [math.log(2 * half / (TINY_BIN * 0.5)), 0.0, 30.0, -9.0]], dtype=torch.float64)
    every = every_bin_log_prob(mean, log_scale, K)  # (2, 4, K)
    one = discretized_logistic_log_prob(torch.arange(K).view(K, 1, 1), mean, log_scale, K)  # (K, 2, 4)
    assert torch.allclose(every, one.permute(1, 2, 0), rtol=1e-9, atol=1e-12)
    assert torch.allclose(every.logsumexp(-1), torch.zeros(2, 4, dtype=torch.float64), atol=1e-9)


def test_gradients_are_finite_at_the_extremes():
    K = 256
    symbols = torch.tensor([0, 1, 127, 254, 255]).view(-1, 1, 1, 1, 1)
    means = torch.tensor([-100.0, -1.0, 0.0, 1.0, 100.0])
    log_scales = torch.tensor([-50.0, -7.0, 0.0, 20.0, 200.0])
    grid = torch.meshgrid(means, log_scales, indexing="ij")  # every (mean, log_scale) pair
    mean, log_scale = (t.reshape(1, 1, -1, 1).clone().requires_grad_() for t in grid)  # (1, 1, 25, 1)
    lp = discretized_logistic_log_prob(symbols, mean, log_scale, K)  # (5, 1, 25, 1)
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(log_scale.grad).all()
    head = LogisticMixtureHead(3, K, couple_channels=True, num_mixtures=2)
    params = (torch.randn(2, head.num_params, 2, 2) * 300).requires_grad_()
    x = torch.tensor([0, 255]).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    loss = head.log_prob(params, x).sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(params.grad).all()


def test_next_log_probs_are_the_exact_channel_conditionals_for_rgb():
    """What the sampling engine draws from: p(x_c | x_<c), marginalised over the component;
    their product over the channels is the pixel's probability, and each sums to one."""
    K = 3
    head = LogisticMixtureHead(3, K, couple_channels=True, num_mixtures=2)
    params = random_params(head, seed=3, dtype=torch.float32)
    pixels = every_pixel(3, K)[:, :, 0, 0]  # (K^3, 3)
    flat = params[:, :, 0, 0].expand(len(pixels), -1)  # (K^3, P)
    joint = head.log_prob(params.expand(len(pixels), -1, -1, -1), pixels[:, :, None, None]).sum(1).flatten()
    steps = [head.next_log_probs(flat, c, pixels) for c in range(3)]  # each (K^3, K)
    assert all(torch.allclose(lp.exp().sum(1), torch.ones(len(pixels))) for lp in steps)
    chained = sum(lp.gather(1, pixels[:, c:c + 1])[:, 0] for c, lp in enumerate(steps))
    assert torch.allclose(chained, joint, atol=1e-5)


def test_a_sharp_single_component_puts_its_mode_first():
    head = LogisticMixtureHead(1, 16, couple_channels=False, num_mixtures=1)
    params = torch.tensor([[0.0, 0.2, -3.0]])  # logit, mean, log_scale: mode at bin 9
    lp = head.next_log_probs(params, 0, torch.zeros(1, 1, dtype=torch.long))
    assert lp.argmax().item() == round((0.2 + 1) * 15 / 2)


def test_behind_a_channel_masked_backbone_each_channel_has_a_mixture_of_its_own():
    """One channel at a time: block c of the params (3M values) is channel c's mixture alone,
    its bins sum to one, and ``next_log_probs`` gives ``log_prob``'s terms."""
    K, M = 4, 2
    head = LogisticMixtureHead(3, K, couple_channels=False, num_mixtures=M)
    assert head.per_channel and head.num_params == 3 * M * 3
    params = torch.randn(1, head.num_params, 1, 1, generator=torch.Generator().manual_seed(1))
    pixels = every_pixel(3, K)  # (K^3, 3, 1, 1)
    lp = head.log_prob(params.expand(len(pixels), -1, -1, -1), pixels)  # (K^3, 3, 1, 1)
    one = LogisticMixtureHead(1, K, couple_channels=False, num_mixtures=M)
    for c in range(3):
        alone = one.log_prob(params[:, 3 * M * c:3 * M * (c + 1)].expand(len(pixels), -1, -1, -1), pixels[:, c:c + 1])
        assert torch.allclose(lp[:, c], alone[:, 0])
        steps = head.next_log_probs(params[:, :, 0, 0].expand(len(pixels), -1), c, pixels[:, :, 0, 0])  # (K^3, K)
        assert torch.allclose(steps.exp().sum(1), torch.ones(len(pixels)))
        assert torch.allclose(steps.gather(1, pixels[:, c, 0]), lp[:, c, 0], atol=1e-6)


def test_bad_configurations_name_the_problem():
    with pytest.raises(ValueError, match="1 or 3 channels, got 2"):
        LogisticMixtureHead(2, 256, couple_channels=True)
    head = LogisticMixtureHead(3, 256, couple_channels=True)
    with pytest.raises(ValueError, match=f"{head.num_params} channels, got 5"):
        head.log_prob(torch.zeros(1, 5, 2, 2), torch.zeros(1, 3, 2, 2, dtype=torch.long))


def test_number_of_components_reaches_the_head_through_build_prior(tmp_path):
    prior = latentar.build_prior("pixelcnn", (1, 3, 3), 256, "logistic_mixture", preset="tiny",
                                 head_options={"num_mixtures": 2})
    assert prior.head.num_mixtures == 2 and prior.head.num_params == 2 * 3
    prior.save(tmp_path / "m")
    assert latentar.load(tmp_path / "m").head.num_mixtures == 2

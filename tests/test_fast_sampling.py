"""Fast samplers (each prior's ``Stepper``) against the generic ``naive_sample``.

Both paths go through the one driver (``latentar.priors.engine``), which asks
``prior.head.next_log_probs`` for every symbol in raster (then channel) order, so the
test records the params of each head call: with one generator seed the two
paths must make the same number of draws with the same arguments, with params that
agree within 1e-4 + 1e-4·|param| (caches and incremental layers reorder float sums, so
bit-equality of params is not required; the tiny test networks reach params of ~50),
and must return identical samples.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from prior_cases import case_names, generator, head_cases, prior_class, tiny_prior
from torch import nn

import latentar
from latentar.nn.caches import StepCache
from latentar.nn.masked import MaskedConv2d
from latentar.nn.passes import StepPass
from latentar.nn.shifted import down_right_shifted_conv, down_shifted_conv
from latentar.nn.stepping import WINDOWS, conv_parts, type_name, window_parts
from latentar.nn.windows import RowSplit
from latentar.priors import as_condition
from latentar.priors.base import Prior
from latentar.registry import PRIORS

NAMES = latentar.list_priors()
CASE_NAMES = case_names()  # the registered priors and their variants (``prior_cases.VARIANTS``)
TOL = 1e-4  # per-step params: |fast - naive| <= TOL + TOL·|naive|


def sampling_cases() -> list[tuple]:
    """(name, case id, build kwargs, shape, K, cond maker or None) for every prior."""
    cases = []
    for name in CASE_NAMES:
        for head, C in head_cases(name):
            shape = (1, 4, 5) if C == 1 else (3, 3, 4)
            cases.append((name, f"{head}-C{C}", dict(head=head), shape, 6, None))
        cases.append((name, "codes", dict(symbols="codes", embed_dim=4), (1, 4, 5), 7, None))
        cases.append((name, "classes", dict(num_classes=3), (1, 4, 4), 4,
                      lambda n, g: torch.randint(0, 3, (n,), generator=g)))
        cases.append((name, "augment", dict(augmentations=("rot90", "transpose")), (1, 4, 4), 4,
                      lambda n, g: {"augment": torch.randint(0, 8, (n,), generator=g)}))
        if prior_class(name).supports_context:
            cases.append((name, "context", dict(symbols="codes", embed_dim=4, context_symbols=3,
                                                context_shape=(2, 2)), (1, 4, 4), 5,
                           lambda n, g: {"context": torch.randint(0, 3, (n, 2, 2), generator=g)}))
    return cases


CASES = sampling_cases()
# a composite (``Prior.composite``) draws its auxiliary first and completes no region of x
COMPLETION_CASES = [case for case in CASES if not prior_class(case[0]).composite]


def traced_draws(prior: Prior, sampler: str, n: int, cond, seed: int, start_row: int | None = None, **draw):
    """Run ``prior.<sampler>`` (or ``redraw`` of a fixed grid from ``start_row``) recording each
    head call -> (samples, [(channel, pixel so far (n, C), params (n, P))])."""
    trace = []
    next_log_probs = prior.head.next_log_probs

    def recording(params, channel, pixel):
        trace.append((channel, pixel.clone(), params.detach().clone()))
        return next_log_probs(params, channel, pixel)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(prior.head, "next_log_probs", recording)
        if start_row is None:
            samples = getattr(prior, sampler)(n, cond, generator=generator(prior.device, seed), **draw)
        else:
            kept = torch.randint(0, prior.spec.num_symbols, (n, *prior.spec.shape),
                                 generator=torch.Generator().manual_seed(seed))
            stepper = Prior.Stepper if sampler == "naive_sample" else type(prior).Stepper
            with m.context() as inner:
                inner.setattr(type(prior), "Stepper", stepper)
                samples = prior.redraw(kept, start_row, as_condition(cond, n=n, device=prior.device),
                                       generator=generator(prior.device, seed), **draw)
            assert torch.equal(samples[:, :, :start_row].cpu(), kept[:, :, :start_row]), "kept rows changed"
    return samples, trace


def assert_same_draws(prior, n, cond, seed=0, start_row=None, **draw):
    naive, naive_trace = traced_draws(prior, "naive_sample", n, cond, seed, start_row, **draw)
    fast, fast_trace = traced_draws(prior, "sample", n, cond, seed, start_row, **draw)
    assert len(fast_trace) == len(naive_trace), "fast and naive samplers make different numbers of draws"
    for step, ((fast_c, fast_pixel, fast_params), (naive_c, naive_pixel, naive_params)) in enumerate(
            zip(fast_trace, naive_trace)):
        assert fast_c == naive_c and torch.equal(fast_pixel, naive_pixel), f"draw {step}: other arguments"
        if prior.channel_masked:  # the draw of channel c reads its block of params only (``Stepper.params``)
            size = prior.head.num_params // prior.spec.shape[0]
            fast_params, naive_params = (p[:, fast_c * size:(fast_c + 1) * size] for p in (fast_params, naive_params))
        err = (fast_params - naive_params).abs() - TOL * naive_params.abs()  # (n, P)
        assert err.max() <= TOL, f"draw {step}: params differ by more than {TOL} (absolute + relative)"
    assert torch.equal(fast, naive)
    return fast


@pytest.mark.parametrize("name", NAMES)
def test_every_prior_has_fast_sampling(name):
    cls = PRIORS.get(name)
    assert cls.Stepper is not Prior.Stepper, f"{name!r} has no fast stepper (its Stepper is the naive one)"
    assert cls.sample is Prior.sample, f"{name!r} overrides sample: sampling belongs to the engine"


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_fast_sampling_matches_naive(case, device):
    name, _, kwargs, shape, K, draw_cond = case
    prior = tiny_prior(name, shape, K, device=device, **kwargs)
    n = 3
    cond = draw_cond(n, torch.Generator().manual_seed(1)) if draw_cond else None
    samples = assert_same_draws(prior, n, cond)
    assert samples.shape == (n, *shape) and samples.dtype == torch.long and samples.device == prior.device
    assert samples.min() >= 0 and samples.max() < K


@pytest.mark.parametrize("name", CASE_NAMES)
def test_fast_sampling_with_temperature_and_top_k_restores_train_mode(name, device):
    prior = tiny_prior(name, (1, 3, 3), 5, device=device).train()
    for draw in (dict(temperature=0.5), dict(temperature=1.7, top_k=3)):
        assert_same_draws(prior, 4, None, seed=2, **draw)
        assert prior.training, "sample must restore train mode"
    top1 = prior.sample(4, top_k=1, generator=generator(device, 3))
    again = prior.sample(4, top_k=1, generator=generator(device, 4))
    assert torch.equal(top1, again), "top_k=1 is greedy: the seed must not matter"


def test_the_trace_catches_a_wrong_sampler(monkeypatch):
    """A 'fast' sampler that draws from another distribution fails the comparison."""
    prior = tiny_prior("pixelcnn", (1, 3, 3), 4)

    def wrong(n, cond=None, **draw):  # the same loop with every param nudged by 1e-3
        head_call = prior.head.next_log_probs
        with pytest.MonkeyPatch.context() as m:
            m.setattr(prior.head, "next_log_probs", lambda params, c, pixel: head_call(params + 1e-3, c, pixel))
            return Prior.naive_sample(prior, n, cond, **draw)

    monkeypatch.setattr(prior, "sample", wrong)
    with pytest.raises(AssertionError, match="params differ"):
        assert_same_draws(prior, 2, None)


@pytest.mark.parametrize("case", COMPLETION_CASES, ids=[f"{c[0]}-{c[1]}" for c in COMPLETION_CASES])
def test_completion_matches_naive(case, device):
    """redraw from row 2: the fast stepper first walks the kept rows, then draws as naive does."""
    name, _, kwargs, shape, K, draw_cond = case
    prior = tiny_prior(name, shape, K, device=device, **kwargs)
    cond = draw_cond(3, torch.Generator().manual_seed(1)) if draw_cond else None
    assert_same_draws(prior, 3, cond, seed=4, start_row=2)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_guidance_and_top_p_match_naive(name, device):
    prior = tiny_prior(name, (1, 3, 4), 5, device=device, num_classes=3, class_dropout=0.1)
    labels = torch.tensor([0, 2, 1])
    assert_same_draws(prior, 3, labels, seed=5, cfg_scale=3.0, top_p=0.8, temperature=0.9)
    if not prior_class(name).composite:
        assert_same_draws(prior, 3, labels, seed=6, cfg_scale=2.0, start_row=2)  # a block row under local_2d


@pytest.mark.parametrize("name", NAMES)
def test_guidance_with_labels_and_augmentation_matches_naive(name, device):
    """Guidance doubles the batch with the null class; each grid keeps its augmentation id."""
    prior = tiny_prior(name, (1, 3, 4), 5, device=device, num_classes=3, class_dropout=0.1, augmentations=("flip",))
    cond = {"labels": torch.tensor([0, 2, 1]), "augment": torch.tensor([1, 0, 1])}
    guided = assert_same_draws(prior, 3, cond, seed=5, cfg_scale=3.0)
    assert not torch.equal(guided, assert_same_draws(prior, 3, {**cond, "augment": torch.tensor([0, 1, 0])},
                                                     seed=5, cfg_scale=3.0))


# ---- the pieces of a step ----------------------------------------------------------------
CAUSAL_CONVS = {
    "mask-A-groups": lambda: MaskedConv2d(4, 6, 5, "A", groups=2),
    "mask-B-groups": lambda: MaskedConv2d(6, 4, 3, "B", groups=2),
    "mask-B-row": lambda: MaskedConv2d(3, 8, (1, 3), "B"),
    "down-right": lambda: down_right_shifted_conv(3, 4, (2, 2)),
    "down-right-shifted": lambda: down_right_shifted_conv(3, 4, (2, 1), shift_right=True),
    "down-shifted-above-only": lambda: down_shifted_conv(3, 4, (1, 3), shift=True),
}


@pytest.mark.parametrize("make", CAUSAL_CONVS.values(), ids=CAUSAL_CONVS.keys())
def test_row_split_evaluates_a_causal_conv_position_by_position(make):
    """``RowSplit`` at every position in raster order == the whole-map conv: ``at`` keeps the last
    input handed over at a position (a NaN one before it must be forgotten), ``at_input`` never
    reads a later position of its map (NaN there)."""
    torch.manual_seed(0)
    conv = make()
    H, W = 4, 5
    x = torch.randn(2, conv.in_channels, H, W)
    with torch.no_grad():
        full = conv(x)  # (2, O, H, W)
        features, inputs = (RowSplit.of(conv, conv_parts(conv), (H, W)) for _ in range(2))
        for r in range(H):
            for c in range(W):
                features.at(r, c, torch.full_like(x[:, :, r, c], float("nan")))  # replaced by the next call
                assert torch.allclose(features.at(r, c, x[:, :, r, c]), full[:, :, r, c], atol=1e-5), (r, c)
                known = x.clone().flatten(2)
                known[:, :, r * W + c + 1:] = float("nan")  # not drawn yet
                got = inputs.at_input(r, c, known.view_as(x))
                assert torch.allclose(got, full[:, :, r, c], atol=1e-5), (r, c)


def test_row_split_refuses_convs_it_cannot_split():
    """Weight right of or below the position (a plain conv), or a stride: evaluate whole windows."""
    for conv in (nn.Conv2d(3, 4, 3, padding=1), down_shifted_conv(3, 4, (2, 3)),
                 down_right_shifted_conv(3, 4, (2, 2), stride=2)):
        assert RowSplit.of(conv, conv_parts(conv), (4, 4)) is None, conv


def test_a_new_layer_type_steps_by_the_rule_it_registers(monkeypatch):
    """Passes look layer types up in ``latentar.nn.stepping``'s rules, so a layer type defined
    outside ``nn/`` registers how it steps; a type without a rule is refused, named."""

    class HalfMaskedConv(MaskedConv2d):  # applies half its masked weight
        def forward(self, x):
            return F.conv2d(x, self.weight * self.mask / 2, self.bias, self.stride, self.padding)

    def half_parts(conv):
        return window_parts(conv, conv.weight * conv.mask / 2, taps=conv.mask.amax(dim=(0, 1)) > 0)

    monkeypatch.setattr(WINDOWS, "_found", {})
    monkeypatch.setitem(WINDOWS._rules._entries, type_name(HalfMaskedConv), half_parts)
    torch.manual_seed(0)
    conv, H, W = HalfMaskedConv(3, 4, 3, "A"), 3, 4
    x = torch.randn(2, 3, H, W)
    cache = StepCache(2, [(H, W)])
    with torch.no_grad():
        full = conv(x)  # (2, 4, H, W)
        for r in range(H):
            for c in range(W):
                step = StepPass(cache, r, c).conv(conv, x[:, :, r:r + 1, c:c + 1])  # (2, 4, 1, 1)
                assert torch.allclose(step[:, :, 0, 0], full[:, :, r, c], atol=1e-6), (r, c)
    with pytest.raises(TypeError, match=r"layer type Identity has no rule in latentar.nn.stepping.WINDOWS"):
        StepPass(StepCache(2, [(H, W)]), 0, 0).conv(nn.Identity(), x[:, :, :1, :1])

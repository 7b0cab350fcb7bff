"""Fast samplers (overrides of ``Prior.sample``) against the generic ``naive_sample``.

Both paths draw every symbol through ``prior.head.sample`` in raster (then channel)
order, so the test records the params of each draw: with one generator seed the two
paths must make the same number of draws with the same arguments, with params that
agree within 1e-4 + 1e-4·|param| (caches and incremental layers reorder float sums, so
bit-equality of params is not required; the tiny test networks reach params of ~50),
and must return identical samples.
"""

from __future__ import annotations

import inspect

import pytest
import torch

import latentar
from latentar.priors.base import Prior
from latentar.registry import PRIORS
from prior_cases import generator, head_cases, tiny_prior

NAMES = latentar.list_priors()
TOL = 1e-4  # per-step params: |fast - naive| <= TOL + TOL·|naive|


def sampling_cases() -> list[tuple]:
    """(name, case id, build kwargs, shape, K, cond maker or None) for every prior."""
    cases = []
    for name in NAMES:
        for head, C in head_cases(name):
            shape = (1, 4, 5) if C == 1 else (3, 3, 4)
            cases.append((name, f"{head}-C{C}", dict(head=head), shape, 6, None))
        cases.append((name, "codes", dict(symbols="codes", embed_dim=4), (1, 4, 5), 7, None))
        cases.append((name, "classes", dict(num_classes=3), (1, 4, 4), 4,
                      lambda n, g: torch.randint(0, 3, (n,), generator=g)))
        if PRIORS.get(name).supports_context:
            cases.append((name, "context", dict(symbols="codes", embed_dim=4, context_symbols=3,
                                                context_shape=(2, 2)), (1, 4, 4), 5,
                           lambda n, g: {"context": torch.randint(0, 3, (n, 2, 2), generator=g)}))
    return cases


CASES = sampling_cases()


def traced_draws(prior: Prior, sampler: str, n: int, cond, seed: int, **draw):
    """Run ``prior.<sampler>`` recording each head draw -> (samples, [(settings, params (n, P))])."""
    trace = []
    head_sample = prior.head.sample
    signature = inspect.signature(head_sample)

    def recording(params, **kwargs):
        args = signature.bind(params, **kwargs)
        args.apply_defaults()  # channel=None passed or left out is the same draw
        settings = {k: v for k, v in args.arguments.items() if k not in ("params", "generator")}
        trace.append((settings, params.detach().clone()))
        return head_sample(params, **kwargs)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(prior.head, "sample", recording)
        samples = getattr(prior, sampler)(n, cond, generator=generator(prior.device, seed), **draw)
    return samples, trace


def assert_same_draws(prior, n, cond, seed=0, **draw):
    naive, naive_trace = traced_draws(prior, "naive_sample", n, cond, seed, **draw)
    fast, fast_trace = traced_draws(prior, "sample", n, cond, seed, **draw)
    assert len(fast_trace) == len(naive_trace), "fast and naive samplers make different numbers of draws"
    for step, ((fast_kw, fast_params), (naive_kw, naive_params)) in enumerate(zip(fast_trace, naive_trace)):
        assert fast_kw == naive_kw, f"draw {step}: other arguments"
        err = (fast_params - naive_params).abs() - TOL * naive_params.abs()  # (n, P)
        assert err.max() <= TOL, f"draw {step}: params differ by more than {TOL} (absolute + relative)"
    assert torch.equal(fast, naive)
    return fast


@pytest.mark.parametrize("name", NAMES)
def test_every_prior_has_fast_sampling(name):
    cls = PRIORS.get(name)
    assert cls.sample is not Prior.sample, f"{name!r} has no fast sampler (it does not override sample)"


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_fast_sampling_matches_naive(case, device):
    name, _, kwargs, shape, K, make_cond = case
    prior = tiny_prior(name, shape, K, device=device, **kwargs)
    n = 3
    cond = make_cond(n, torch.Generator().manual_seed(1)) if make_cond else None
    samples = assert_same_draws(prior, n, cond)
    assert samples.shape == (n, *shape) and samples.dtype == torch.long and samples.device == prior.device
    assert samples.min() >= 0 and samples.max() < K


@pytest.mark.parametrize("name", NAMES)
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
        head_sample = prior.head.sample
        with pytest.MonkeyPatch.context() as m:
            m.setattr(prior.head, "sample", lambda params, **kw: head_sample(params + 1e-3, **kw))
            return Prior.naive_sample(prior, n, cond, **draw)

    monkeypatch.setattr(prior, "sample", wrong)
    with pytest.raises(AssertionError, match="params differ"):
        assert_same_draws(prior, 2, None)

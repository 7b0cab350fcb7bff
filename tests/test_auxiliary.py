"""The ``auxiliary`` prior p(a) · p(x | a): exact by brute force (C = 1 and 3, both heads, both
auxiliaries, a deeper pyramid), samples against the exact probabilities, fast == naive through
every stage, the auxiliary of every sample is stage 0's draw, save/load, the feasible values of a
gray level against their definition, and the errors. ``tests/test_priors.py`` and the other shared
suites cover its default (a one-level pyramid) as they cover every registered prior."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from prior_cases import every_grid, generator, tiny_prior

import latentar
from latentar.cli import main
from latentar.priors.auxiliaries import GrayscaleRule, coarse, grayscale, restricted_log_probs
from latentar.receptive_field import receptive_field

# (aux options, shape, K): tiny grids whose every grid can be scored
EXACT = {
    "pyramid-C1": (dict(aux="pyramid"), (1, 2, 2), 3),
    "pyramid-C3": (dict(aux="pyramid"), (3, 1, 2), 2),
    "pyramid-2-levels": (dict(aux="pyramid", levels=2), (1, 3, 3), 2),
    "grayscale-C1": (dict(aux="grayscale", gray_levels=2), (1, 2, 2), 3),
    "grayscale-C3": (dict(aux="grayscale", gray_levels=3), (3, 1, 1), 4),
    # channel-masked detail stages, their context entering every block / gate
    "pyramid-pixelcnn-C3": (dict(aux="pyramid", base="pixelcnn"), (3, 1, 2), 2),
    "grayscale-gated_pixelcnn-C3": (dict(aux="grayscale", gray_levels=3, base="gated_pixelcnn"), (3, 1, 1), 4),
}


def auxiliary(options: dict, shape, K: int, head: str = "categorical", **kwargs) -> latentar.Prior:
    return tiny_prior("auxiliary", shape, K, head, **options, **kwargs)


def frequencies(samples: torch.Tensor, K: int) -> torch.Tensor:
    digits = samples[0].numel()
    index = (samples.flatten(1) * K ** torch.arange(digits - 1, -1, -1)).sum(1)  # every_grid order
    return torch.bincount(index, minlength=K ** digits).float() / len(samples)


@pytest.mark.parametrize("head", ["categorical", "logistic_mixture"])
@pytest.mark.parametrize("case", EXACT.values(), ids=EXACT.keys())
def test_exact_normalization(case, head):
    options, shape, K = case
    prior = auxiliary(options, shape, K, head)
    with torch.no_grad():
        total = prior.log_prob(every_grid(shape, K)).exp().sum().item()
    assert abs(total - 1.0) < 1e-5


def test_without_the_renormalisation_it_is_a_bound(monkeypatch):
    """Every value allowed in the detail stage: the sum over all grids falls short of 1."""
    options, shape, K = EXACT["grayscale-C3"]
    prior = auxiliary(options, shape, K)
    monkeypatch.setattr(GrayscaleRule, "allowed", lambda self, info, pixel, c: torch.ones(
        len(pixel), self.num_symbols, dtype=torch.bool))
    with torch.no_grad():
        total = prior.log_prob(every_grid(shape, K)).exp().sum().item()
    assert total < 0.99


@pytest.mark.parametrize("K,levels", [(2, 2), (4, 3), (7, 7), (16, 5)])
@pytest.mark.parametrize("C", [1, 3])
def test_feasible_values_are_those_from_which_the_gray_level_is_reachable(K, levels, C):
    """``GrayscaleRule.allowed`` == its definition: value v of channel c given the earlier channels is
    allowed iff some values of the later channels give the pixel gray level g."""
    rule = GrayscaleRule(K, levels, C)
    pixels = torch.tensor(list(itertools.product(range(K), repeat=C)))  # (K^C, C)
    gray = grayscale(pixels[:, :, None, None], K, levels).flatten()  # (K^C,)
    for c in range(C):
        for g in range(levels):
            prefixes = torch.unique(pixels[:, :c], dim=0) if c else pixels[:1, :0]
            for prefix in prefixes:
                same = (pixels[:, :c] == prefix).all(1) & (gray == g)
                expected = torch.zeros(K, dtype=torch.bool)
                expected[pixels[same, c]] = True
                pixel = torch.cat([prefix, torch.zeros(C - c, dtype=torch.long)])[None]  # later channels unread
                assert torch.equal(rule.allowed(torch.tensor([g]), pixel, c)[0], expected), (c, g, prefix)


@pytest.mark.parametrize("head", ["categorical", "logistic_mixture"])
@pytest.mark.parametrize("case", [EXACT["pyramid-C1"], EXACT["grayscale-C3"]], ids=["pyramid", "grayscale"])
def test_samples_follow_log_prob(case, head):
    options, shape, K = case
    prior = auxiliary(options, shape, K, head)
    n = 4000
    samples = prior.sample(n, generator=generator("cpu", 0))
    with torch.no_grad():
        p = prior.log_prob(every_grid(shape, K)).exp()
    tv = 0.5 * (frequencies(samples, K) - p).abs().sum().item()
    assert tv < 1.5 * math.sqrt(len(p) / n), f"total variation {tv:.3f}"


def traced(prior: latentar.Prior, sampler: str, n: int, cond, seed: int, **knobs):
    """``prior.<sampler>`` recording every head call of every stage -> (samples, trace)."""
    trace = []
    with pytest.MonkeyPatch.context() as m:
        for i, stage in enumerate(prior.stages):
            def recording(params, channel, pixel, stage=i, call=stage.head.next_log_probs):
                trace.append((stage, channel, pixel.clone(), params.clone()))
                return call(params, channel, pixel)

            m.setattr(stage.head, "next_log_probs", recording)
        samples = getattr(prior, sampler)(n, cond, generator=generator("cpu", seed), **knobs)
    return samples, trace


@pytest.mark.parametrize("options,C", [(dict(aux="pyramid", levels=2), 1), (dict(aux="pyramid"), 3),
                                       (dict(aux="grayscale", gray_levels=4), 1),
                                       (dict(aux="grayscale", gray_levels=4), 3),
                                       (dict(aux="pyramid", base_aux="pixelcnn", base_detail="transformer"), 3),
                                       (dict(aux="pyramid", levels=2, base="pixelcnn"), 3),
                                       (dict(aux="grayscale", gray_levels=4, base="gated_pixelcnn"), 3)],
                         ids=["pyramid-2-levels", "pyramid-C3", "grayscale-C1", "grayscale-C3",
                              "pixelcnn-then-transformer-C3", "pixelcnn-pyramid-C3", "gated_pixelcnn-grayscale-C3"])
def test_fast_sampling_matches_naive_through_every_stage(options, C):
    prior = auxiliary(options, (C, 3, 4), 6, num_classes=3, class_dropout=0.1)
    labels = torch.tensor([0, 2, 1])
    for seed, knobs in enumerate([{}, dict(temperature=0.8, top_k=4, top_p=0.9, cfg_scale=2.0)]):
        fast, fast_trace = traced(prior, "sample", 3, labels, seed, **knobs)
        naive, naive_trace = traced(prior, "naive_sample", 3, labels, seed, **knobs)
        assert torch.equal(fast, naive)
        assert len(fast_trace) == len(naive_trace) and {t[0] for t in fast_trace} == set(range(len(prior.stages)))
        for (stage, c, pixel, params), (naive_stage, naive_c, naive_pixel, naive_params) in zip(fast_trace,
                                                                                                naive_trace):
            assert (stage, c) == (naive_stage, naive_c) and torch.equal(pixel, naive_pixel)
            assert torch.allclose(params, naive_params, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("options", [dict(aux="pyramid", levels=2), dict(aux="grayscale", gray_levels=3)],
                         ids=["pyramid", "grayscale"])
def test_the_auxiliary_of_every_sample_is_the_first_stages_draw(options, monkeypatch):
    prior = auxiliary(options, (3, 5, 4), 5)
    first, drawn = prior.stages[0], []
    draw = first.draw_new
    monkeypatch.setattr(first, "draw_new", lambda *args: drawn.append(draw(*args)) or drawn[-1])
    samples = prior.sample(6, generator=generator("cpu", 2), temperature=1.3)
    auxiliary_of = (coarse(coarse(samples)) if options["aux"] == "pyramid"
                    else grayscale(samples, 5, options["gray_levels"]))
    assert len(drawn) == 1 and torch.equal(auxiliary_of, drawn[0])


def test_log_prob_is_the_sum_of_the_stages():
    """log p(x) = log p(a) + log p(x | a); each coarse symbol carries its coarse-level nats."""
    prior = auxiliary(dict(aux="pyramid"), (1, 4, 4), 5)
    x = torch.randint(0, 5, (4, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        per_symbol = prior.log_prob_per_symbol(x)
        coarse_nats = prior.stages[0].log_prob_per_symbol(coarse(x))
        detail = prior.stages[1].log_prob_per_symbol(x, {"context": coarse(x)[:, 0]})
    assert torch.allclose(per_symbol[:, :, ::2, ::2], coarse_nats)  # log 1 of the copy + the coarse nats
    fine = torch.ones(4, 4, dtype=torch.bool)
    fine[::2, ::2] = False
    assert torch.allclose(per_symbol[:, :, fine], detail[:, :, fine])
    assert torch.allclose(prior.log_prob(x), per_symbol.flatten(1).sum(1))


def test_save_load_round_trip_with_separate_bases_and_stage_options(tmp_path):
    prior = auxiliary(dict(aux="grayscale", gray_levels=4, base_aux="gated_pixelcnn", base_detail="transformer",
                           aux_options=dict(hidden=5), detail_options=dict(width=12)), (3, 4, 4), 8, num_classes=2)
    assert prior.stages[0].arch.hidden == 5 and prior.stages[1].arch.width == 12
    shared = latentar.build_prior("auxiliary", (1, 4, 4), 4, preset="tiny", base="transformer", width=6)
    assert shared.arch.stage_options == {"width": 6} and [s.arch.width for s in shared.stages] == [6, 6]
    x = torch.randint(0, 8, (3, 3, 4, 4))
    labels = torch.tensor([0, 1, 1])
    prior.save(tmp_path / "m")
    loaded = latentar.load(tmp_path / "m").eval()
    with torch.no_grad():
        assert torch.equal(prior.log_prob(x, labels), loaded.log_prob(x, labels))
    assert [s.name for s in loaded.stages] == ["gated_pixelcnn", "transformer"]


def test_bad_settings_and_requests_name_the_problem():
    with pytest.raises(ValueError, match=r"detail stage .* needs a base that takes a spatial context, one of "
                                         r"\['gated_pixelcnn', 'pixelcnn', 'pixelcnn_pp', 'pixelsnail', "
                                         r"'transformer'\]; got 'row_lstm'"):
        latentar.build_prior("auxiliary", (1, 4, 4), 4, base="row_lstm", preset="tiny")
    with pytest.raises(ValueError, match="grayscale auxiliary needs ordinal pixels"):
        latentar.build_prior("auxiliary", (1, 4, 4), 4, aux="grayscale", symbols="codes", preset="tiny")
    with pytest.raises(ValueError, match=r"gray_levels \(16\) must be at most the symbols K \(4\)"):
        latentar.build_prior("auxiliary", (1, 4, 4), 4, aux="grayscale", preset="tiny")
    with pytest.raises(ValueError, match="auxiliary.aux must be one of"):
        latentar.build_prior("auxiliary", (1, 4, 4), 4, aux="edges", preset="tiny")
    with pytest.raises(TypeError, match="unknown argument.*'hiden'.*'pixelsnail'"):
        latentar.build_prior("auxiliary", (1, 4, 4), 4, hiden=3, preset="tiny")
    prior = auxiliary(dict(aux="pyramid"), (1, 4, 4), 4)
    x = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="no exact conditional given a known region"):
        prior.redraw(x, 1)
    with pytest.raises(ValueError, match="no exact conditional given a known region"):
        prior.log_prob(x, known=torch.eye(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="generates in raster order only"):
        prior.sample(2, order=torch.arange(16).flip(0))
    with pytest.raises(ValueError, match="measure the receptive field of one of its stages"):
        receptive_field(prior)
    assert prior.redraw(x, 0, generator=generator("cpu", 0)).shape == x.shape  # an empty region: new grids


def test_checkpointing_reaches_the_stages_that_support_it():
    """``set_activation_checkpointing`` is passed to every stage whose base supports it (the same loss and
    gradients, its blocks run again in backward); refused, named, when no stage's base does."""
    prior = auxiliary(dict(aux="pyramid", base_aux="pixelcnn", base_detail="pixelsnail"), (1, 4, 4), 4).train()
    x = torch.randint(0, 4, (3, 1, 4, 4), generator=generator("cpu", 0))
    calls = []
    for block in prior.stages[1].modules():
        if type(block).__name__ == "SnailBlock":
            block.register_forward_pre_hook(lambda *_: calls.append(1))

    def loss_and_grads():
        prior.zero_grad(set_to_none=True)
        loss = prior.loss(x)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in prior.parameters()]

    plain_loss, plain = loss_and_grads()
    plain_calls, calls[:] = len(calls), []
    prior.set_activation_checkpointing(True)
    assert [stage.checkpoint_activations for stage in prior.stages] == [False, True] and prior.checkpoint_activations
    checkpointed_loss, checkpointed = loss_and_grads()
    assert len(calls) > plain_calls and torch.equal(plain_loss, checkpointed_loss)
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    prior.set_activation_checkpointing(False)
    assert not any(stage.checkpoint_activations for stage in prior.stages)
    with pytest.raises(ValueError, match=r"'auxiliary' does not support checkpoint_activations with the stages "
                                         r"\['pixelcnn', 'pixelcnn'\]"):
        auxiliary(dict(aux="pyramid", base="pixelcnn"), (1, 4, 4), 4).set_activation_checkpointing(True)


def test_the_command_line_builds_it_from_arch_flags(capsys):
    """``--arch`` sets the composite's fields and, past them, every stage's (``width``); a detail base
    without a spatial context is refused, named."""
    assert main(["bench", "train", "--prior", "auxiliary", "--preset", "tiny", "--shape", "3,4,4", "--symbols", "8",
                 "--arch", "aux=grayscale", "gray_levels=4", "base=transformer",
                 "width=6", "--batch", "2", "--steps", "1", "--warmup", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prior"] == "auxiliary" and math.isfinite(out["loss_nats_per_dim"])
    assert main(["bench", "train", "--prior", "auxiliary", "--preset", "tiny", "--shape", "1,4,4",
                 "--arch", "base=row_lstm"]) == 2
    assert "needs a base that takes a spatial context" in capsys.readouterr().err


@pytest.mark.parametrize("head", ["categorical", "logistic_mixture"])
def test_the_pyramids_short_scoring_is_the_renormalised_one(head):
    """``PyramidRule.log_probs`` (0 at the copies, the head's nats elsewhere) equals the general
    renormalisation over the values its ``allowed`` gives, which the sampler applies."""
    prior = auxiliary(dict(aux="pyramid"), (3, 3, 4), 6, head)
    x = torch.randint(0, 6, (2, 3, 3, 4), generator=torch.Generator().manual_seed(3))
    detail, rule = prior.stages[1], prior.rule
    with torch.no_grad():
        params = detail(x, {"context": prior.context(coarse(x))})
        info = rule.info(None, (3, 4), x.device)
        short = rule.log_probs(detail.head, params, x, info)
        assert torch.allclose(short, restricted_log_probs(rule, detail.head, params, x, info), atol=1e-5)
    assert (short[:, :, ::2, ::2] == 0).all() and (short[:, :, 1::2] < 0).all()

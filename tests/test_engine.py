"""The sampling engine's knobs (hand-computed), guidance and class dropout, and what
temperature means: every head alike, through ``Head.next_log_probs``."""

from __future__ import annotations

import math

import pytest
import torch
from prior_cases import every_grid, head_cases, tiny_prior

import latentar
from latentar.priors.engine import Knobs, apply_temperature, guide, keep_top_k, keep_top_p

NAMES = latentar.list_priors()


def log(p) -> torch.Tensor:
    return torch.tensor(p).log()


def test_top_p_keeps_the_smallest_set_that_reaches_p():
    lp = log([[0.15, 0.5, 0.05, 0.3]])
    kept = lambda p: torch.isfinite(keep_top_p(lp, p))[0].tolist()  # noqa: E731
    assert kept(0.8) == [False, True, False, True]  # 0.5 + 0.3 reaches 0.8
    assert kept(0.81) == [True, True, False, True]
    assert kept(0.4) == [False, True, False, False]  # the most likely value always stays
    assert kept(1.0) == [True] * 4 and torch.equal(keep_top_p(lp, None), lp)


def test_top_k_temperature_and_guidance_by_hand():
    lp = log([[0.1, 0.6, 0.3]])
    assert torch.isfinite(keep_top_k(lp, 2))[0].tolist() == [False, True, True]
    hot = apply_temperature(lp, 2.0).exp()[0]  # p^(1/2), renormalised
    root = torch.tensor([0.1, 0.6, 0.3]).sqrt()
    assert torch.allclose(hot, root / root.sum())
    cond, uncond = log([[0.2, 0.8, 0.0]]), log([[0.5, 0.25, 0.25]])
    guided = guide(cond, uncond, 3.0).exp()[0]
    raw = torch.tensor([0.5 * (0.2 / 0.5) ** 3, 0.25 * (0.8 / 0.25) ** 3, 0.0])
    assert torch.allclose(guided, raw / raw.sum()) and guided[2] == 0  # impossible stays impossible


@pytest.mark.parametrize("bad, message", [
    (dict(temperature=0), "temperature must be a finite number > 0"),
    (dict(temperature=math.nan), "temperature"), (dict(top_k=0), "top_k must be an integer >= 1"),
    (dict(top_k=2.5), "top_k"), (dict(top_p=0), r"top_p must be a number in \(0, 1\]"),
    (dict(top_p=1.5), "top_p"), (dict(cfg_scale=math.inf), "cfg_scale must be a finite number"),
])
def test_bad_knobs_name_the_problem(bad, message):
    with pytest.raises(ValueError, match=message):
        Knobs(**bad)
    with pytest.raises(ValueError, match=message):
        tiny_prior("pixelcnn", (1, 2, 2), 3).naive_sample(2, **bad)


@pytest.mark.parametrize("name", NAMES)
def test_neutral_knobs_equal_plain_sampling(name):
    prior = tiny_prior(name, (1, 3, 3), 4, num_classes=2, class_dropout=0.2)
    labels = torch.tensor([0, 1, 1])
    plain = prior.sample(3, labels, generator=torch.Generator().manual_seed(0))
    same = prior.sample(3, labels, top_p=1.0, cfg_scale=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain, same)


def test_guidance_needs_a_null_class():
    prior = tiny_prior("pixelcnn", (1, 2, 2), 3, num_classes=2)
    with pytest.raises(ValueError, match="cfg_scale != 1 needs .* class_dropout > 0"):
        prior.sample(2, 1, cfg_scale=2.0)
    with pytest.raises(ValueError, match="class_dropout=0.3 needs a class-conditional prior"):
        latentar.build_prior("pixelcnn", (1, 2, 2), 3, class_dropout=0.3)
    with pytest.raises(ValueError, match="class_dropout must be"):
        latentar.build_prior("pixelcnn", (1, 2, 2), 3, num_classes=2, class_dropout=1.0)


def test_class_dropout_replaces_training_labels_by_the_null_class_only_in_train_mode():
    prior = tiny_prior("pixelcnn", (1, 2, 2), 3, num_classes=4, class_dropout=0.25)
    seen = []
    prior.class_bias.register_forward_hook(lambda module, args, out: seen.append(args[0].clone()))
    x, labels = torch.zeros(4000, 1, 2, 2, dtype=torch.long), torch.randint(0, 4, (4000,))
    torch.manual_seed(0)
    prior.train().loss(x, labels)
    dropped = seen[-1] == 4
    assert abs(dropped.float().mean().item() - 0.25) < 0.03
    assert torch.equal(seen[-1][~dropped], labels[~dropped])
    prior.eval().log_prob(x[:8], labels[:8])
    assert torch.equal(seen[-1], labels[:8]), "eval mode keeps every label"
    assert prior.class_bias.num_embeddings == 5


def total_variation(prior, n: int, knobs: dict, target: torch.Tensor) -> float:
    K = prior.spec.num_symbols
    samples = prior.sample(n, generator=torch.Generator().manual_seed(0), **knobs)
    digits = samples[0].numel()
    index = (samples.flatten(1) * K ** torch.arange(digits - 1, -1, -1)).sum(1)  # every_grid order
    freq = torch.bincount(index, minlength=K ** digits).float() / n
    return 0.5 * (freq - target).abs().sum().item()


@pytest.mark.parametrize("name, head, C", [(name, head, C) for name in NAMES[:2] + ["pixelcnn_pp"]
                                           for head, C in head_cases(name)])
def test_temperature_scales_each_symbols_conditional(name, head, C):
    """At temperature T each symbol is drawn from p(x_i | x_<i)^(1/T), renormalised: on a
    one-position grid the joint is the product of those tempered conditionals."""
    shape, K = ((1, 1, 1), 4) if C == 1 else ((3, 1, 1), 3)
    prior = tiny_prior(name, shape, K, head)
    grids, T, n = every_grid(shape, K), 0.5, 6000
    with torch.no_grad():
        per_symbol = prior.log_prob_per_symbol(grids).flatten(1)  # (N, C) log p(x_c | x_<c)
        normaliser = torch.zeros(len(grids))
        for c in range(C):  # the tempered conditional of channel c sums over x_c, given x_<c
            tempered = per_symbol[:, c] / T
            prefix = (grids.flatten(1)[:, :c] * K ** torch.arange(c - 1, -1, -1)).sum(1) if c else torch.zeros(
                len(grids), dtype=torch.long)
            sums = torch.zeros(int(prefix.max()) + 1).index_add_(0, prefix, tempered.exp()) / K ** (C - 1 - c)
            normaliser += sums[prefix].log()
        target = (per_symbol.sum(1) / T - normaliser).exp()
    assert abs(target.sum().item() - 1) < 1e-4
    tv = total_variation(prior, n, dict(temperature=T), target)
    assert tv < 1.5 * math.sqrt(len(grids) / n), f"total variation {tv:.3f}"


def test_guided_sampling_from_the_command_line(tmp_path, image_folder, capsys):
    from latentar.cli import main

    common = ["train-prior", "--data", "image_folder", "--data-root", str(image_folder), "--prior", "pixelcnn",
              "--preset", "tiny", "--class-conditional", "--steps", "1", "--batch-size", "4"]
    assert main([*common, "--class-dropout", "0.2", "--out", str(tmp_path / "cfg")]) == 0
    prior = latentar.load(tmp_path / "cfg" / "model")
    assert prior.spec.class_dropout == 0.2 and prior.class_bias.num_embeddings == 3  # 2 classes + null
    sample = ["sample", "--model", str(tmp_path / "cfg" / "model"), "-n", "2", "--class", "1", "--top-p", "0.9"]
    assert main([*sample, "--cfg-scale", "3", "--out", str(tmp_path / "guided.png")]) == 0
    assert (tmp_path / "guided.png").is_file()
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    sample[2] = str(tmp_path / "plain" / "model")
    assert main([*sample, "--cfg-scale", "3", "--out", str(tmp_path / "x.png")]) == 2
    assert "class_dropout > 0" in capsys.readouterr().err

"""The Transformer's ``permute_positions``: under augmentation id a, p(y | a) is the any-order
Transformer generating the unaugmented grid x = augment⁻¹(y, a) in the order σ_a (the positions
that y's raster slots hold), told a; exact for every id, sampled and completed in agreement."""

from __future__ import annotations

import json
import math

import pytest
import torch
from cli_run import run
from prior_cases import every_grid, generator, tiny_prior

import latentar
from latentar.checks import FieldError
from latentar.priors.orders import known_first

D4 = ("rot90", "transpose")
PERMUTED = dict(order_embedding=True, permute_positions=True)
# (types, grid shape, K): the square's 8 symmetries, mirrors of a non-square grid, the 24 orders of 2×2 tiles
TYPES = [(D4, (1, 2, 2), 2), (("flip",), (1, 2, 3), 2), (("jigsaw",), (1, 2, 2), 2)]


def sigma(types, H: int, W: int) -> torch.Tensor:
    """σ_a of every id, written out from the definition -> long (ids, H·W)."""
    count = math.prod(latentar.augmentations.SIZES[name] for name in types)
    return torch.stack([latentar.augment(torch.arange(H * W).view(1, 1, H, W), a, types).flatten()
                        for a in range(count)])


def permuted_prior(types, shape, K, **kwargs) -> latentar.Prior:
    return tiny_prior("transformer", shape, K, augmentations=types, **PERMUTED, **kwargs)


def ids(a: int, n: int) -> dict:
    return {"augment": torch.full((n,), a)}


def type_names(value) -> str | None:
    """The test id of a tuple of augmentation types ("rot90-transpose"); None (pytest's own) otherwise."""
    return "-".join(value) if isinstance(value, tuple) and all(isinstance(v, str) for v in value) else None


@pytest.mark.parametrize("types, shape, K", TYPES, ids=type_names)
def test_every_id_is_normalized_and_its_own_distribution(types, shape, K):
    prior = permuted_prior(types, shape, K)
    grids = every_grid(shape, K)
    with torch.no_grad():
        lps = [prior.log_prob(grids, ids(a, len(grids))) for a in range(prior.num_augmentations)]
        assert torch.equal(prior.log_prob(grids), lps[0])  # no id: the identity
    for lp in lps:
        assert abs(lp.exp().sum().item() - 1.0) < 1e-5
    assert not any(torch.allclose(lps[0], lp) for lp in lps[1:]), "an id changes nothing"


@pytest.mark.parametrize("types, shape, K", TYPES + [(D4, (3, 2, 2), 4)], ids=type_names)
@pytest.mark.parametrize("tokens", ["pixel", "subpixel"])
def test_p_y_given_a_is_the_ordered_network_on_x_in_sigma_a(types, shape, K, tokens):
    """The same weights without ``permute_positions`` (an any-order prior of one listed order),
    scoring x in σ_a under id a, give the same nats as the permuted prior scoring y."""
    prior = permuted_prior(types, shape, K, tokens=tokens, num_classes=2)
    plain = tiny_prior("transformer", shape, K, augmentations=types, order_embedding=True, num_orders=1,
                       tokens=tokens, num_classes=2)
    plain.load_state_dict(prior.state_dict())
    x = torch.randint(0, K, (6, *shape), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    orders = sigma(types, *shape[1:])
    with torch.no_grad():
        for a in range(prior.num_augmentations):
            cond = {"labels": labels, "augment": torch.full((6,), a)}
            y = latentar.augment(x, a, types)
            torch.testing.assert_close(prior.log_prob(y, cond), plain.log_prob(x, cond, order=orders[a]))
        # one batch of mixed ids, as training hands it
        mixed = torch.arange(6) % prior.num_augmentations
        y = latentar.augment(x, mixed, types)
        expected = torch.stack([plain.log_prob(x[b:b + 1], {"labels": labels[b:b + 1], "augment": mixed[b:b + 1]},
                                               order=orders[mixed[b]])[0] for b in range(6)])
        torch.testing.assert_close(prior.log_prob(y, {"labels": labels, "augment": mixed}), expected)


@pytest.mark.parametrize("a", range(8))
def test_samples_under_an_id_follow_its_distribution(a):
    shape, K = (1, 2, 2), 2
    prior = permuted_prior(D4, shape, K)
    n = 4000
    samples = prior.sample(n, ids(a, n), generator=generator("cpu", a))
    grids = every_grid(shape, K)
    with torch.no_grad():
        p = prior.log_prob(grids, ids(a, len(grids))).exp()
    index = (samples.flatten(1) * K ** torch.arange(3, -1, -1)).sum(1)  # every_grid order
    freq = torch.bincount(index, minlength=len(grids)).float() / n
    tv = 0.5 * (freq - p).abs().sum().item()
    assert tv < 1.5 * math.sqrt(len(grids) / n), f"total variation {tv:.3f} under id {a}"


@pytest.mark.parametrize("tokens", ["pixel", "subpixel"])
def test_fast_sampling_draws_what_naive_sampling_draws(tokens):
    prior = permuted_prior(D4, (3, 4, 4), 5, tokens=tokens, num_classes=3, class_dropout=0.1)
    cond = {"labels": torch.tensor([0, 2, 1, 1]), "augment": torch.tensor([0, 3, 5, 6])}
    for knobs in (dict(), dict(cfg_scale=2.0, temperature=0.9)):
        fast = prior.sample(4, cond, generator=generator("cpu", 7), **knobs)
        naive = prior.naive_sample(4, cond, generator=generator("cpu", 7), **knobs)
        assert torch.equal(fast, naive)


def test_known_regions_stay_exact():
    """The prior stays any-order over y: a known part that is no raster prefix is generated first
    (y in the order known_first(raster), so x in σ_a after it), and log p(y_U | y_K) is the
    brute-force ratio log p(y) - log p(y_K) of that order's normalized joint, under every id."""
    shape, K = (1, 2, 2), 2
    prior = permuted_prior(D4, shape, K)
    grids = every_grid(shape, K)
    known = torch.tensor([[False, False], [False, True]])
    order = known_first(torch.arange(4), known)  # (3, 0, 1, 2)
    for a in (0, 3, 6):
        with torch.no_grad():
            joint = prior.log_prob(grids, ids(a, len(grids)), order=order)
            given = prior.log_prob(grids, ids(a, len(grids)), known=known)
        assert abs(joint.exp().sum().item() - 1.0) < 1e-5
        marginal = torch.stack([torch.logsumexp(joint[grids[:, 0, 1, 1] == grids[i, 0, 1, 1]], 0)
                                for i in range(len(grids))])
        torch.testing.assert_close(given, joint - marginal)
        completed = prior.complete(grids[:4], known, ids(a, 4), generator=generator("cpu", 0))
        assert torch.equal(completed[:, :, 1, 1], grids[:4, :, 1, 1])


@pytest.mark.parametrize("settings, build, message", [
    (PERMUTED, {}, "needs a prior built with augmentations"),
    (PERMUTED, dict(augmentations=("flip", "channels")), "cannot go with the augmentation 'channels'"),
    (dict(permute_positions=True), dict(augmentations=D4), "needs transformer.order_embedding = true"),
    ({**PERMUTED, "attention": "local_2d", "block": 2}, dict(augmentations=D4),
     "permute_positions = true cannot go with attention = 'local_2d'"),
    ({**PERMUTED, "orders": "s_curve"}, dict(augmentations=D4), "σ_a replaces the listed orders"),
])
def test_refusals(settings, build, message):
    with pytest.raises(FieldError, match=message):
        latentar.build_prior("transformer", (3, 4, 4), 4, preset="tiny", **build, **settings)


def test_a_non_square_grid_is_refused_for_rotations():
    with pytest.raises(ValueError, match=r"augmentation\(s\) \['rot90', 'transpose'\] need a square grid, got 4×6"):
        latentar.build_prior("transformer", (1, 4, 6), 4, preset="tiny", augmentations=D4, **PERMUTED)


def test_the_tables_are_rebuilt_not_saved(tmp_path):
    prior = permuted_prior(D4, (1, 4, 4), 4)
    assert "augment_orders" not in prior.state_dict()
    assert torch.equal(prior.augment_orders, sigma(D4, 4, 4)) and torch.equal(prior.orders, torch.arange(16)[None])
    prior.save(tmp_path / "m")
    loaded = latentar.load(tmp_path / "m").eval()
    assert loaded.arch.permute_positions and torch.equal(loaded.augment_orders, prior.augment_orders)
    y = torch.randint(0, 4, (8, 1, 4, 4))
    cond = {"augment": torch.arange(8)}
    with torch.no_grad():
        assert torch.equal(loaded.log_prob(y, cond), prior.log_prob(y, cond))



def test_train_prior_with_permuted_positions_then_load_and_score(capsys, tmp_path, image_folder):
    out = tmp_path / "run"
    common = ["--data", "image_folder", "--data-root", image_folder]
    code, _, err = run(capsys, "train-prior", *common, "--prior", "transformer", "--preset", "tiny",
                       "--batch-size", 4, "--subset", 8, "--steps", 2, "--augment", "rot90,transpose",
                       "--augment-rate", 0.5, "--arch", "permute_positions=true", "order_embedding=true",
                       "--out", out)
    assert code == 0, err
    prior = latentar.load(out / "model").eval()
    assert prior.arch.permute_positions and prior.spec.augmentations == D4
    code, printed, err = run(capsys, "eval", "--model", out / "model", *common, "--augment", "all")
    assert code == 0, err
    scores = json.loads(printed)["by_augment"]
    assert sorted(map(int, scores)) == list(range(8))
    assert all(math.isfinite(s["bits_per_dim"]) for s in scores.values())
    assert len({round(s["bits_per_dim"], 9) for s in scores.values()}) > 1

"""The lmconv prior: exact and causal under any order, its listed orders, and its fast stepper
against the whole network."""

from __future__ import annotations

import math

import pytest
import torch
from prior_cases import every_grid, generator, tiny_prior

import latentar
from latentar.priors.condition import Condition
from latentar.priors.engine import Knobs, NaiveStepper
from latentar.priors.lmconv import LMConvStepper
from latentar.priors.orders import named_orders, ranks, s_curve


def orders_of(H: int, W: int) -> dict[str, torch.Tensor]:
    return {"raster": torch.arange(H * W), "s_curve": s_curve(H, W),
            "random": torch.randperm(H * W, generator=torch.Generator().manual_seed(3))}


@pytest.mark.parametrize("order_name", ["raster", "s_curve", "random"])
@pytest.mark.parametrize("shape,K,head", [((1, 2, 3), 2, "categorical"), ((3, 1, 2), 2, "categorical"),
                                          ((1, 2, 2), 3, "logistic_mixture")])
def test_every_order_is_normalized(order_name, shape, K, head):
    prior = tiny_prior("lmconv", shape, K, head)
    grids = every_grid(shape, K)
    with torch.no_grad():
        total = prior.log_prob(grids, order=orders_of(*shape[1:])[order_name]).exp().sum()
    assert abs(total.item() - 1) < 1e-4


def test_the_mixture_of_orders_is_normalized_and_differs_from_each_order():
    prior = tiny_prior("lmconv", (1, 2, 2), 3, num_orders=4)
    grids = every_grid((1, 2, 2), 3)
    with torch.no_grad():
        mixture = prior.log_prob(grids)
        each = torch.stack([prior.log_prob(grids, order=i) for i in range(4)])  # (4, N)
    assert abs(mixture.exp().sum().item() - 1) < 1e-5
    assert torch.allclose(mixture, torch.logsumexp(each, 0) - math.log(4), atol=1e-5)
    assert not torch.allclose(each[0], each[1], atol=1e-3)


@pytest.mark.parametrize("head,C", [("categorical", 1), ("categorical", 3), ("logistic_mixture", 3)])
def test_causal_under_a_random_order(head, C):
    """The log-prob of the t-th position of the order has no gradient from any position at or
    after t, and some from the position just before it."""
    H, W = 4, 5
    prior = tiny_prior("lmconv", (C, H, W), 6, head)
    order = orders_of(H, W)["random"]
    rank = ranks(order).view(H, W)
    x = torch.randint(0, 6, (3, C, H, W), generator=torch.Generator().manual_seed(0))
    cond = prior.check_inputs(x, None)
    z = prior.input(x).detach().requires_grad_()
    lp = prior.head.log_prob(prior.network(z, cond, order), x)  # (3, C, H, W)
    for t in range(H * W):
        h, w = divmod(order[t].item(), W)
        (grad,) = torch.autograd.grad(lp[:, :, h, w].sum(), z, retain_graph=True)
        seen = grad.abs().sum(dim=(0, 1))  # (H, W)
        assert seen[rank >= t].sum() == 0, f"step {t} at {(h, w)} sees itself or later"
        if t:
            before = divmod(order[t - 1].item(), W)
            if abs(before[0] - h) <= 1 and abs(before[1] - w) <= 1:  # a neighbour: the stem reads it
                assert seen[before] > 0, f"step {t} misses the neighbour generated just before"


def test_orders_are_the_named_variants_and_the_first_is_the_default():
    prior = tiny_prior("lmconv", (1, 4, 4), 3, num_orders=8)
    assert torch.equal(prior.orders, named_orders("s_curve", 8, 4, 4))
    assert "order_table" not in prior.state_dict()  # rebuilt from the arch, never saved
    x = torch.randint(0, 3, (2, 1, 4, 4))
    cond = prior.check_inputs(x, None)
    with torch.no_grad():
        assert torch.equal(prior.network(prior.input(x), cond), prior.network(prior.input(x), cond, prior.orders[0]))
        assert not torch.allclose(prior.network(prior.input(x), cond), prior.network(prior.input(x), cond,
                                                                                    prior.orders[1]))
    with pytest.raises(ValueError, match=r"num_orders must be an integer in \[1, 4\]"):
        latentar.build_prior("lmconv", (1, 3, 4), 2, num_orders=8)
    with pytest.raises(ValueError, match="unknown order 'hilbert'|lmconv.orders"):
        latentar.build_prior("lmconv", (1, 4, 4), 2, orders="hilbert")


@pytest.mark.parametrize("order_name", ["raster", "s_curve", "random"])
@pytest.mark.parametrize("guided", [False, True])
def test_stepper_gives_the_networks_params_while_drawing(order_name, guided):
    """Walking the order, drawing each position as the driver does, the stepper's params equal
    the whole network's on the grids drawn so far, for the conditional and the null class."""
    C, H, W, K = 3, 3, 4, 5
    prior = tiny_prior("lmconv", (C, H, W), K, "logistic_mixture", num_classes=2, class_dropout=0.1)
    order = orders_of(H, W)[order_name]
    labels = torch.tensor([0, 1, 2, 2] if guided else [0, 1])  # 2: the null class of guidance
    x = torch.randint(0, K, (len(labels), C, H, W), generator=torch.Generator().manual_seed(1))
    cond = Condition(labels=labels)  # the driver's condition, null class included
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        stepper = LMConvStepper(prior, x, cond, order)
        for p in order.tolist():
            h, w = divmod(p, W)
            full = prior.network(prior.input(x), cond, order)[:, :, h, w]  # (n, P)
            assert torch.allclose(stepper.params(h, w, None), full, atol=1e-5, rtol=1e-5), (h, w)
            x[:, :, h, w] = torch.randint(0, K, (len(labels), C), generator=g)  # the draw at (h, w)
            stepper.take(h, w)


@pytest.mark.parametrize("order_name", ["raster", "s_curve", "random", "mixture"])
@pytest.mark.parametrize("guided", [False, True])
def test_fast_samples_equal_naive_samples(order_name, guided):
    C, H, W, K = 1, 4, 4, 5
    prior = tiny_prior("lmconv", (C, H, W), K, num_classes=2, class_dropout=0.1, num_orders=3)
    order = None if order_name == "mixture" else orders_of(H, W)[order_name]
    knobs = dict(cfg_scale=2.0 if guided else 1.0)
    fast = prior.sample(6, torch.tensor([0, 1, 0, 1, 0, 1]), order=order, generator=generator("cpu", 5), **knobs)
    naive = prior.naive_sample(6, torch.tensor([0, 1, 0, 1, 0, 1]), order=order, generator=generator("cpu", 5),
                               **knobs)
    assert torch.equal(fast, naive)


def test_grids_in_their_own_orders_walk_in_one_batch():
    """One walk with an order per grid draws what each grid drawn alone in its order draws
    (top_k=1 makes the draws a function of the params alone)."""
    C, H, W, K = 3, 3, 4, 4
    prior = tiny_prior("lmconv", (C, H, W), K, "logistic_mixture", num_classes=2)
    each = torch.stack([orders_of(H, W)["random"], s_curve(H, W), torch.arange(H * W)])  # (3, H·W)
    labels = torch.tensor([0, 1, 1])
    together = prior.draw_by_order(*prior.blank_grids(3, labels), Knobs(top_k=1), 3, each,
                                   torch.arange(3), generator=generator("cpu", 0))
    alone = torch.cat([prior.sample(1, int(label), order=order, top_k=1) for label, order in zip(labels, each)])
    assert torch.equal(together, alone)
    assert not torch.equal(alone[0], alone[2])  # the orders draw different grids


def test_fast_completion_equals_naive_completion():
    C, H, W, K = 3, 4, 4, 4
    prior = tiny_prior("lmconv", (C, H, W), K, "logistic_mixture", num_orders=2)
    x = torch.randint(0, K, (4, C, H, W), generator=torch.Generator().manual_seed(0))
    known = torch.zeros(H, W, dtype=torch.bool)
    known[1:3, 1:3] = True  # the centre: neither a prefix of raster nor of S-curve orders
    fast = prior.complete(x, known, generator=generator("cpu", 1))
    with pytest.MonkeyPatch.context() as m:
        m.setattr(type(prior), "Stepper", NaiveStepper)
        naive = prior.complete(x, known, generator=generator("cpu", 1))
    assert torch.equal(fast, naive)
    assert torch.equal(fast[:, :, known], x[:, :, known])


def test_training_draws_a_listed_order_for_each_batch():
    prior = tiny_prior("lmconv", (1, 3, 3), 3, num_orders=4)
    x = torch.randint(0, 3, (2, 1, 3, 3), generator=torch.Generator().manual_seed(0))
    z, cond = prior.input(x), prior.check_inputs(x, None)
    with torch.no_grad():
        each = [prior.network(z, cond, order) for order in prior.orders]
        prior.train()
        used = set()
        for seed in range(12):
            torch.manual_seed(seed)
            params = prior.network(z, cond)
            used |= {i for i, p in enumerate(each) if torch.equal(params, p)}
    assert used == {0, 1, 2, 3}


def test_masks_first_built_while_sampling_serve_training():
    from latentar.nn import locally_masked

    locally_masked._cached_mask.cache_clear()  # built anew here, in inference mode
    prior = latentar.build_prior("lmconv", (1, 5, 5), 2, preset="tiny")
    x = prior.sample(2, generator=torch.Generator().manual_seed(0))  # masks built in inference mode
    prior.train()
    prior.loss(x).backward()  # and reused with autograd
    assert prior.stem.weight.grad is not None


def test_the_receptive_field_follows_the_listed_order_asked_for():
    from latentar.receptive_field import field_summary, prior_past, receptive_field

    prior = tiny_prior("lmconv", (1, 6, 6), 2, num_orders=4, num_blocks=2)
    fields = []
    for order in range(4):
        field, past = receptive_field(prior, (2, 3), order=order), prior_past(prior, (2, 3), order)
        assert field_summary(field, past, (2, 3), past)["leaks"] == 0 and field.any()  # inside that order's past
        fields.append(field)
    assert not all(torch.equal(fields[0], f) for f in fields[1:])  # another order, another field

"""Orders in the engine, the mixture of orders and known regions: ``Prior.log_prob(order=,
known=)``, ``Prior.sample(order=)``, ``Prior.complete`` and ``generation.complete(known=)``.

Raster priors (every registered prior that cannot reorder) keep today's values and refuse
other orders and masks; a prior that takes any order (the registered ones and the test-only
``AnyOrderMade``) is checked by brute force on tiny grids: normalization of the mixture, of
one order and of a random permutation, the exact conditional of any known region, and draws
against the exact probabilities."""

from __future__ import annotations

import math

import pytest
import torch
from any_order_prior import any_order_prior
from prior_cases import VARIANTS, every_grid, tiny_prior

import latentar
from latentar.generation import complete
from latentar.priors.orders import known_first, ranks, raster, s_curve
from latentar.registry import PRIORS

# raster priors of one network (a composite refuses known regions: tests/test_auxiliary.py)
RASTER = [name for name in latentar.list_priors() if not PRIORS.get(name).any_order and not PRIORS.get(name).composite]
ANY_ORDER = ([name for name in latentar.list_priors() if PRIORS.get(name).any_order]
             + [name for name in VARIANTS if tiny_prior(name, (1, 1, 2), 2).any_order] + ["any_order_made"])
DIAGONAL = torch.tensor([[True, False], [False, True]])  # known (0, 0) and (1, 1): no raster prefix


def any_order(name: str, shape, K: int, **kwargs):
    """A tiny prior that takes any order, with two orders in its mixture."""
    if name == "any_order_made":
        return any_order_prior(shape, K, **kwargs)
    return tiny_prior(name, shape, K, num_orders=2, **kwargs)


def frequencies(samples: torch.Tensor, K: int) -> torch.Tensor:
    """Draws long (n, C, H, W) -> the frequency of each grid, in ``every_grid`` order."""
    digits = samples[0].numel()
    index = (samples.flatten(1) * K ** torch.arange(digits - 1, -1, -1)).sum(1)
    return torch.bincount(index, minlength=K ** digits).float() / len(samples)


def total_variation(freq: torch.Tensor, p: torch.Tensor) -> float:
    return 0.5 * (freq - p).abs().sum().item()


# ---- raster priors ------------------------------------------------------------------------
@pytest.mark.parametrize("name", RASTER)
def test_raster_log_prob_is_unchanged_and_known_rows_give_the_rest(name):
    prior = tiny_prior(name, (1, 3, 3), 4)
    x = torch.randint(0, 4, (5, 1, 3, 3), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        per_symbol = prior.log_prob_per_symbol(x)  # (5, 1, 3, 3)
        assert torch.equal(prior.log_prob(x), per_symbol.flatten(1).sum(1))
        assert torch.equal(prior.log_prob(x, order=0), prior.log_prob(x, order=raster(3, 3)))
        for r in range(4):
            known = (torch.arange(3) < r)[:, None].expand(3, 3)
            expected = per_symbol[:, :, r:].flatten(1).sum(1)
            assert torch.allclose(prior.log_prob(x, known=known), expected, atol=1e-5)
        prefixes = torch.zeros(5, 3, 3, dtype=torch.bool)  # per grid: the first 0, 2, 4, 6, 9 positions
        for b, count in enumerate([0, 2, 4, 6, 9]):
            prefixes[b].view(-1)[:count] = True
        expected = torch.where(prefixes[:, None], 0, per_symbol).flatten(1).sum(1)
        assert torch.allclose(prior.log_prob(x, known=prefixes), expected, atol=1e-5)


@pytest.mark.parametrize("name", RASTER)
def test_raster_priors_refuse_other_orders_and_regions(name):
    prior = tiny_prior(name, (1, 2, 2), 2)
    x = torch.zeros(2, 1, 2, 2, dtype=torch.long)
    no_order = f"prior '{name}' generates in raster order only and takes no other order"
    with pytest.raises(ValueError, match=no_order):
        prior.log_prob(x, order=s_curve(2, 2).flip(0))
    with pytest.raises(ValueError, match=no_order):
        prior.sample(2, order=torch.tensor([3, 2, 1, 0]))
    with pytest.raises(ValueError, match=r"order must be an index in \[0, 1\)"):
        prior.log_prob(x, order=1)
    with pytest.raises(ValueError, match="exactly once"):
        prior.sample(2, order=torch.tensor([0, 0, 1, 2]))
    region = f"prior '{name}' generates in raster order only, so the known positions must be the top rows"
    with pytest.raises(ValueError, match=region):
        prior.log_prob(x, known=DIAGONAL)
    with pytest.raises(ValueError, match=region):
        prior.complete(x, DIAGONAL)
    with pytest.raises(ValueError, match=r"known must have shape \(2, 2\) or \(2, 2, 2\)"):
        prior.complete(x, torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="known must be a bool tensor"):
        prior.log_prob(x, known=DIAGONAL.long())


@pytest.mark.parametrize("name", ["pixelcnn", "transformer", "row_lstm"])
def test_raster_conditional_by_brute_force(name):
    """A raster prefix mask: Σ over the unknown values of exp(log_prob(x, known)) = 1 for every
    known value, and complete's draws follow that conditional."""
    shape, K = (1, 2, 2), 2
    prior = tiny_prior(name, shape, K)
    grids = every_grid(shape, K)
    known = torch.tensor([[True, True], [True, False]])  # a left part of row 1
    with torch.no_grad():
        conditional = prior.log_prob(grids, known=known).exp()  # (16,)
    key = grids[:, 0, :, :].flatten(1)[:, :3]  # the known values, in raster order
    for values in key.unique(dim=0):
        assert abs(conditional[(key == values).all(1)].sum().item() - 1) < 1e-5
    x = grids[[6]].expand(4000, -1, -1, -1)
    drawn = prior.complete(x, known, generator=torch.Generator().manual_seed(0))
    assert torch.equal(drawn[:, :, known], x[:, :, known])
    target = torch.where((key == key[6]).all(1), conditional, 0)
    assert total_variation(frequencies(drawn, K), target) < 1.5 * math.sqrt(2 / 4000)


def test_redraw_and_complete_of_the_top_rows_draw_the_same():
    prior = tiny_prior("pixelcnn", (1, 3, 3), 3)
    x = torch.randint(0, 3, (6, 1, 3, 3), generator=torch.Generator().manual_seed(1))
    known = (torch.arange(3) < 1)[:, None].expand(3, 3)
    redrawn = prior.redraw(x, 1, generator=torch.Generator().manual_seed(2))
    assert torch.equal(redrawn, prior.complete(x, known, generator=torch.Generator().manual_seed(2)))
    assert torch.equal(prior.sample(4, order=0, generator=torch.Generator().manual_seed(3)),
                       prior.sample(4, generator=torch.Generator().manual_seed(3)))


# ---- priors that take any order -------------------------------------------------------------
@pytest.mark.parametrize("name", ANY_ORDER)
def test_any_order_normalization_by_brute_force(name):
    shape, K = (1, 2, 2), 2
    prior = any_order(name, shape, K)
    grids = every_grid(shape, K)
    assert prior.orders.shape == (2, 4)
    with torch.no_grad():
        mixture = prior.log_prob(grids)
        single = [prior.log_prob(grids, order=i) for i in range(2)]
        permuted = prior.log_prob(grids, order=torch.randperm(4, generator=torch.Generator().manual_seed(0)))
    for log_p in (mixture, *single, permuted):
        assert abs(log_p.exp().sum().item() - 1) < 1e-5
    assert not torch.allclose(single[0], single[1]), "two orders, one distribution: the test sees no mixture"
    assert torch.allclose(mixture, torch.logsumexp(torch.stack(single), 0) - math.log(2), atol=1e-6)


@pytest.mark.parametrize("name", ANY_ORDER)
def test_any_order_conditional_of_any_region(name):
    """A non-prefix known mask under the mixture: the conditional sums to 1 for every known
    value; it is the mixture's exact conditional over the known-first orders; per-grid masks
    give each grid's value; complete draws follow it."""
    shape, K = (1, 2, 2), 2
    prior = any_order(name, shape, K)
    grids = every_grid(shape, K)
    with torch.no_grad():
        conditional = prior.log_prob(grids, known=DIAGONAL).exp()
        first = [known_first(order, DIAGONAL) for order in prior.orders.cpu()]
        joint = torch.stack([prior.log_prob(grids, order=order) for order in first])  # (2, 16)
        per_grid = prior.log_prob(grids, known=DIAGONAL.expand(16, 2, 2).clone().index_fill_(0, torch.tensor([3]),
                                                                                             False))
    key = grids[:, 0][:, DIAGONAL]  # (16, 2) the known values
    marginals = torch.zeros(2, 16)
    for values in key.unique(dim=0):
        group = (key == values).all(1)
        assert abs(conditional[group].sum().item() - 1) < 1e-5
        marginals[:, group] = joint[:, group].exp().sum(1, keepdim=True)
    exact = (joint.exp().sum(0) / marginals.sum(0))  # Σ_i p_i(x) / Σ_i p_i(x_K)
    assert torch.allclose(conditional, exact, atol=1e-5)
    assert torch.allclose(per_grid[3], prior.log_prob(grids[[3]]).squeeze(0), atol=1e-6)
    assert torch.allclose(per_grid[torch.arange(16) != 3], conditional[torch.arange(16) != 3].log(), atol=1e-5)
    x = grids[[9]].expand(4000, -1, -1, -1)
    drawn = prior.complete(x, DIAGONAL, generator=torch.Generator().manual_seed(0))
    assert torch.equal(drawn[:, :, DIAGONAL], x[:, :, DIAGONAL])
    target = torch.where((key == key[9]).all(1), conditional, 0)
    assert total_variation(frequencies(drawn, K), target) < 1.5 * math.sqrt(4 / 4000)


@pytest.mark.parametrize("name", ANY_ORDER)
def test_any_order_samples_follow_the_mixture_and_each_order(name):
    shape, K, n = (1, 2, 2), 2, 4000
    prior = any_order(name, shape, K)
    grids = every_grid(shape, K)
    for order in (None, 1, torch.tensor([2, 0, 3, 1])):
        with torch.no_grad():
            p = prior.log_prob(grids, order=order).exp()
        drawn = prior.sample(n, order=order, generator=torch.Generator().manual_seed(0))
        assert total_variation(frequencies(drawn, K), p) < 1.5 * math.sqrt(16 / n), f"order {order}"


@pytest.mark.parametrize("name", ANY_ORDER)
def test_any_order_causality_by_gradients(name):
    """Under a random order, the log-prob of the t-th position has zero gradient with respect to
    every position at or after t, and some gradient with respect to the ones before."""
    C, H, W = 1, 3, 3
    prior = any_order(name, (C, H, W), 4)
    order = torch.randperm(H * W, generator=torch.Generator().manual_seed(3))
    x = torch.randint(0, 4, (8, C, H, W), generator=torch.Generator().manual_seed(4))
    z = prior.input(x).detach().requires_grad_()
    lp = prior.head.log_prob(prior.ordered_network(z, prior.check_inputs(x, None), order), x)  # (8, C, H, W)
    step = ranks(order).view(H, W)
    for t, position in enumerate(order.tolist()):
        h, w = divmod(position, W)
        (grad,) = torch.autograd.grad(lp[:, :, h, w].sum(), z, retain_graph=True)
        seen = grad.abs().sum((0, 1))  # (H, W)
        assert seen[step >= t].sum() == 0, f"step {t} sees its own future"
        if t:
            assert seen[step < t].sum() > 0, f"step {t} sees no past"


def test_generation_complete_takes_a_known_mask():
    prior = tiny_prior("pixelcnn", (1, 4, 4), 2)
    images = torch.ones(2, 1, 4, 4, dtype=torch.uint8)
    known = torch.zeros(4, 4, dtype=torch.bool)
    known[:2] = True
    known[2, 0] = True
    result = complete(prior, images, samples=3, known=known, seed=0)
    assert torch.equal(result.shown[:, 0], known.expand(2, 4, 4))
    assert torch.equal(result.completions[:, :, 0][:, :, known], torch.ones(2, 3, 9, dtype=torch.uint8))
    rows = complete(prior, images, 2, samples=3, seed=0)
    assert rows.shown[:, :, :2].all() and not rows.shown[:, :, 2:].any()
    with pytest.raises(ValueError, match="keep_rows .* or as a known mask, not both"):
        complete(prior, images, 2, known=known)
    with pytest.raises(ValueError, match="raster order only"):
        complete(prior, images, known=known.T.contiguous())

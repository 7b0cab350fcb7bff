"""The Transformer's sub-pixel tokens (``tokens = "subpixel"``) and its any-order mode
(``order_embedding``): what a slot holds, normalization and causality where the shared suites do
not reach (several code channels, sub-pixel slots under a random order), grids walked in their
own orders, the orders trained on, and the errors. The shared suites run both variants too
(``prior_cases.VARIANTS``)."""

from __future__ import annotations

import json

import pytest
import torch
from prior_cases import every_grid, generator, tiny_prior
from test_fast_sampling import assert_same_draws

import latentar
from latentar import cli, load
from latentar.checks import FieldError
from latentar.data import load_dataset
from latentar.nn.levels import LevelTable
from latentar.priors import Condition
from latentar.priors.engine import Knobs
from latentar.priors.orders import named_orders, ranks, s_curve


def test_a_level_table_reads_row_s_at_level_s_and_moves_with_its_input():
    table = LevelTable(3, 5, 4)
    s = torch.tensor([[0, 2, 4], [4, 1, 3]])  # (2, C)
    v = (s.float() * (2 / 4) - 1).requires_grad_()
    out = table(v)  # (2, C, D)
    assert torch.equal(out, table.rows.weight.view(3, 5, 4)[torch.arange(3), s])
    out.sum().backward()
    assert (v.grad != 0).all(), "a gradient test must see the inputs a token reads"


@pytest.mark.parametrize("symbols", ["pixels", "codes"])
def test_subpixel_tokens_embed_each_channel_alone_and_add_a_channel_embedding(symbols):
    kwargs = dict(symbols="codes", embed_dim=4) if symbols == "codes" else {}
    prior = tiny_prior("transformer", (3, 2, 2), 5, tokens="subpixel", **kwargs)
    assert prior.channel_masked and prior.num_slots == 12 and prior.out.out_features == 5  # K params a slot
    rgb = latentar.build_prior("transformer", (3, 2, 2), 256, "logistic_mixture", preset="tiny", tokens="subpixel")
    assert rgb.head.per_channel and rgb.out.out_features == 3 * 10  # one channel's mixture of 10 a slot
    x = torch.randint(0, 5, (2, 3, 2, 2))
    vectors = prior.embed_symbols(prior.input(x))  # (2, H·W·C, D), channels innermost
    assert vectors.shape == (2, 12, prior.arch.width)
    if symbols == "pixels":
        rows = prior.levels.rows.weight.view(3, 5, -1)
        assert torch.equal(vectors[1, 2 * 3 + 1], rows[1, x[1, 1, 1, 0]])  # position (1, 0), channel 1
    changed = x.clone()
    changed[:, 2, 1, 1] = (changed[:, 2, 1, 1] + 1) % 5  # the last symbol of the last position: read by no slot
    with torch.no_grad():
        assert torch.equal(prior(x)[:, :10], prior(changed)[:, :10])  # its own and earlier channels' params
    assert not torch.equal(prior.channel_embedding.weight[0], prior.channel_embedding.weight[1])


@pytest.mark.parametrize("order_embedding", [False, True])
def test_subpixel_codes_of_two_channels_are_normalized(order_embedding):
    """Two codebooks (C = 2): the shared suites' code cases have one channel."""
    shape, K = (2, 1, 2), 3
    more = dict(order_embedding=True, num_orders=2) if order_embedding else {}
    prior = tiny_prior("transformer", shape, K, symbols="codes", embed_dim=4, tokens="subpixel", **more)
    grids = every_grid(shape, K)
    with torch.no_grad():
        totals = [prior.log_prob(grids).exp().sum().item()]
        if order_embedding:
            totals.append(prior.log_prob(grids, order=torch.tensor([1, 0])).exp().sum().item())
    assert all(abs(total - 1) < 1e-5 for total in totals), totals


@pytest.mark.parametrize("head", ["categorical", "logistic_mixture"])
def test_subpixel_slots_are_causal_under_a_random_order(head):
    """Slot order = position order × channels: the log-prob of symbol (c, p) moves with the
    symbols of earlier slots only, channels < c of p included."""
    C, H, W = (3, 2, 3) if head == "categorical" else (1, 3, 3)
    prior = tiny_prior("transformer", (C, H, W), 6, head, tokens="subpixel", order_embedding=True, num_orders=1)
    order = torch.randperm(H * W, generator=torch.Generator().manual_seed(5))
    x = torch.randint(0, 6, (6, C, H, W), generator=torch.Generator().manual_seed(6))
    z = prior.input(x).detach().requires_grad_()
    lp = prior.head.log_prob(prior.ordered_network(z, Condition(), order), x)  # (6, C, H, W)
    slot = ranks(order).view(H, W) * C + torch.arange(C).view(C, 1, 1)  # (C, H, W)
    for c in range(C):
        for p in range(H * W):
            h, w = divmod(p, W)
            (grad,) = torch.autograd.grad(lp[:, c, h, w].sum(), z, retain_graph=True)
            seen = grad.abs().sum(0)  # (C, H, W)
            assert seen[slot >= slot[c, h, w]].sum() == 0, f"symbol {(c, h, w)} sees its own future"
            if slot[c, h, w] > 0:
                assert seen[slot < slot[c, h, w]].sum() > 0, f"symbol {(c, h, w)} sees no past"


@pytest.mark.parametrize("tokens, head", [("pixel", "logistic_mixture"), ("subpixel", "categorical")])
def test_grids_in_their_own_orders_match_naive_and_walk_in_one_batch(tokens, head):
    C, H, W, K = 3, 3, 4, 5
    prior = tiny_prior("transformer", (C, H, W), K, head, tokens=tokens, order_embedding=True, num_orders=4,
                       num_classes=2, class_dropout=0.1)
    labels = torch.tensor([0, 1, 1, 0])
    assert_same_draws(prior, 4, labels)  # the mixture: each grid draws its order
    assert_same_draws(prior, 4, labels, seed=3, start_row=1, cfg_scale=2.0)  # known rows first, per-grid orders
    each = torch.stack([torch.randperm(H * W, generator=torch.Generator().manual_seed(1)), s_curve(H, W),
                        torch.arange(H * W)])  # (3, H·W)
    together = prior.draw_by_order(*prior.blank_grids(3, labels[:3]), Knobs(top_k=1), 3, each, torch.arange(3),
                                   generator=generator("cpu", 0))
    alone = torch.cat([prior.sample(1, int(label), order=order, top_k=1) for label, order in zip(labels, each)])
    assert torch.equal(together, alone)
    assert not torch.equal(alone[0], alone[2])  # the orders draw different grids


def test_orders_listed_drawn_in_training_and_random_permutations():
    H = W = 3
    listed = tiny_prior("transformer", (1, H, W), 4, order_embedding=True, orders="s_curve", num_orders=4)
    assert torch.equal(listed.orders, named_orders("s_curve", 4, H, W)) and listed.any_order
    assert torch.equal(listed.own_order(torch.device("cpu")), listed.orders[0])  # evaluation: the first
    listed.train()
    drawn = {tuple(listed.own_order(torch.device("cpu")).tolist()) for _ in range(40)}
    assert drawn == {tuple(row) for row in listed.orders.tolist()}, "training draws each listed order"
    fresh = tiny_prior("transformer", (1, H, W), 4, order_embedding=True, orders="random", num_orders=2).train()
    assert torch.equal(fresh.orders, named_orders("raster", 2, H, W))  # the mixture it is scored and sampled by
    drawn = {tuple(fresh.own_order(torch.device("cpu")).tolist()) for _ in range(40)}
    assert len(drawn) > 30 and all(sorted(order) == list(range(H * W)) for order in drawn)
    x = torch.randint(0, 4, (8, 1, H, W))
    fresh.loss(x).backward()
    assert all(p.grad is not None for p in fresh.parameters()), "every parameter learns (DDP needs it)"
    assert not latentar.build_prior("transformer", (1, H, W), 4, preset="tiny").any_order


def test_pixel_tokens_in_raster_order_keep_their_layout_under_an_order_embedding():
    """order_embedding adds the embedding of where each slot's symbols sit; the raster prior's
    slots are unchanged otherwise (a prior without it has no such table)."""
    plain = tiny_prior("transformer", (1, 3, 3), 4)
    ordered = tiny_prior("transformer", (1, 3, 3), 4, order_embedding=True, num_orders=1)
    assert plain.given_rows is None and ordered.given_rows is not None
    assert {n for n, _ in ordered.named_parameters()} - {n for n, _ in plain.named_parameters()} == {
        "given_rows.weight", "given_cols.weight"}


def test_bad_settings_name_the_problem():
    with pytest.raises(FieldError, match="transformer.tokens must be one of"):
        latentar.build_prior("transformer", (1, 4, 4), 4, preset="tiny", tokens="bytes")
    with pytest.raises(FieldError, match="orders = 's_curve' needs transformer.order_embedding = true"):
        latentar.build_prior("transformer", (1, 4, 4), 4, preset="tiny", orders="s_curve")
    with pytest.raises(ValueError, match=r"num_orders must be an integer in \[1, 4\]"):
        latentar.build_prior("transformer", (1, 3, 4), 4, preset="tiny", order_embedding=True, num_orders=8)
    with pytest.raises(ValueError, match="generates in raster order only"):
        tiny_prior("transformer", (1, 2, 2), 4).log_prob(torch.zeros(1, 1, 2, 2, dtype=torch.long),
                                                         order=torch.tensor([3, 2, 1, 0]))


def test_complete_and_eval_take_any_mask_from_the_command_line(capsys, tmp_path, image_folder):
    """A region no raster order has as a prefix (the centre): redrawn and scored exactly."""
    tiny_prior("transformer", (3, 4, 4), 256, tokens="subpixel", order_embedding=True, num_orders=2).save(
        tmp_path / "prior")
    data = ["--data", "image_folder", "--data-root", str(image_folder), "--data-option", "size=4", "--device", "cpu"]
    assert cli.main(["eval", "--model", str(tmp_path / "prior"), *data, "--mask", "centre"]) == 0
    scores = json.loads(capsys.readouterr().out)
    prior, test = load(tmp_path / "prior"), load_dataset("image_folder", "test", str(image_folder), size=4)
    x = torch.stack([test[i][0] for i in range(len(test))]).long()
    known = torch.ones(4, 4, dtype=torch.bool)
    known[1:3, 1:3] = False
    with torch.no_grad():
        expected = -prior.log_prob(x, known=known).double().sum().item()
    assert scores["nats"] == pytest.approx(expected, rel=1e-5)
    argv = ["complete", "--prior", str(tmp_path / "prior"), *data, "-n", "2", "--samples", "2",
            "--out", str(tmp_path / "c.png"), "--mask", "centre"]
    assert cli.main(argv) == 0 and (tmp_path / "c.png").is_file()
    assert len(json.loads(capsys.readouterr().out)["region_nats_per_image"]) == 2

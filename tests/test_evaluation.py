"""Bits/dim bookkeeping: sums over the whole split divided once, no batch dropped."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

import latentar
from latentar.data import TensorImageDataset, dataset_attribute
from latentar.evaluation import bits_per_dim, evaluate_prior, unpack_prior_batch

SHAPE = (1, 2, 3)  # (C, H, W)


def tiny(**kwargs) -> latentar.Prior:
    torch.manual_seed(0)
    prior = latentar.build_prior("pixelcnn", SHAPE, 4, preset="tiny", **kwargs)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))  # far from uniform, so items score differently
    return prior


def grids(n: int = 10) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randint(0, 4, (n, *SHAPE), generator=g, dtype=torch.uint8),
                         torch.arange(n) % 3)


def test_bits_per_dim_is_nats_over_dims_in_bits():
    assert bits_per_dim(10 * math.log(2), 5) == pytest.approx(2.0)
    assert bits_per_dim(math.log(256), 1) == pytest.approx(8.0)


def test_unequal_last_batch_sums_then_divides_once():
    prior, data = tiny(), grids(10)  # batches of 4, 4, 2
    scores = evaluate_prior(prior, data, batch_size=4)
    x = data.tensors[0].long()
    with torch.no_grad():
        per_symbol = -prior.log_prob_per_symbol(x)  # (10, 1, 2, 3) nats
    assert scores["count"] == 10 and scores["dims"] == 60
    assert scores["nats"] == pytest.approx(per_symbol.sum().item(), rel=1e-6)
    assert scores["nats_per_image"] == pytest.approx(per_symbol.sum().item() / 10, rel=1e-6)
    assert scores["bits_per_dim"] == pytest.approx((per_symbol / math.log(2)).mean().item(), rel=1e-6)
    mean_of_batch_means = torch.stack([b.mean() for b in per_symbol.split(4)]).mean() / math.log(2)
    assert scores["bits_per_dim"] != pytest.approx(mean_of_batch_means.item(), rel=1e-4)
    # another batching: the same sums, up to the float32 network's last bits (kernels vary with batch size)
    assert evaluate_prior(prior, data, batch_size=3)["nats"] == pytest.approx(scores["nats"], rel=1e-6)


def test_evaluation_restores_train_mode_and_keeps_no_graph():
    prior = tiny().train()
    scores = evaluate_prior(prior, grids(), batch_size=4)
    assert prior.training and isinstance(scores["nats"], float)


def test_a_loader_is_scored_as_given():
    prior, data = tiny(), grids(10)
    loader = DataLoader(Subset(data, range(7)), batch_size=3)
    assert evaluate_prior(prior, loader)["count"] == 7


def test_class_conditional_priors_get_the_labels():
    prior, data = tiny(num_classes=3), grids(6)
    x, labels = data.tensors[0].long(), data.tensors[1]
    with torch.no_grad():
        expected = -prior.log_prob(x, labels).sum().item()
    assert evaluate_prior(prior, data, batch_size=4)["nats"] == pytest.approx(expected, rel=1e-6)


def test_code_priors_report_bits_per_code():
    prior = latentar.build_prior("pixelcnn", SHAPE, 4, preset="tiny", symbols="codes", embed_dim=2)
    scores = evaluate_prior(prior, grids(3))
    assert "bits_per_code" in scores and "bits_per_dim" not in scores


def test_binarization_is_reported_through_subsets():
    images = torch.randint(0, 2, (5, *SHAPE), dtype=torch.uint8)
    data = TensorImageDataset(images, torch.zeros(5, dtype=torch.long), num_symbols=2, num_classes=1,
                              binarization="threshold 0.5")
    prior = latentar.build_prior("pixelcnn", SHAPE, 2, preset="tiny")
    assert evaluate_prior(prior, Subset(data, range(3)))["binarization"] == "threshold 0.5"
    assert "binarization" not in evaluate_prior(prior, TensorDataset(images, torch.zeros(5, dtype=torch.long)))
    assert dataset_attribute(Subset(Subset(data, range(4)), range(2)), "num_symbols") == 2


def test_prior_batches_unpack_tuples_and_dicts():
    x = torch.zeros(2, *SHAPE, dtype=torch.uint8)
    labels, context = torch.zeros(2, dtype=torch.long), torch.zeros(2, 2, 2, dtype=torch.long)
    conditional, spec = tiny(num_classes=3).spec, tiny().spec
    assert unpack_prior_batch((x, labels), conditional).cond.labels is labels
    assert unpack_prior_batch((x, labels), spec).cond.labels is None  # unconditional priors drop the labels
    batch = unpack_prior_batch({"x": x, "context": context}, spec)
    assert batch.x.dtype == torch.long and batch.cond.labels is None
    assert batch.cond.context is None  # a prior built without a context drops it
    with pytest.raises(ValueError, match="needs key 'x'"):
        unpack_prior_batch({"codes": x}, spec)
    with pytest.raises(TypeError, match="a prior batch must be"):
        unpack_prior_batch(x, spec)

"""One name per quantity: a prior's bits per symbol are named alike in its training lines, its
evaluations, the final evaluation (metrics.jsonl's last line and done.json) and its curves;
items_per_sec times the updates only; curves.png draws train and test in one unit."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

import latentar
from latentar.evaluation import evaluate_prior
from latentar.runs.curves import Panel, plot_curves, stage_curves
from latentar.training import TrainConfig, Trainer, metrics, prior_objective, read_done, read_metrics


def grids(n: int = 32) -> TensorDataset:
    x = torch.randint(0, 4, (n, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    return TensorDataset(x, torch.zeros(n, dtype=torch.long))


def train_prior(out: Path, symbols: str, objective=prior_objective, evaluate=None, **overrides) -> dict:
    torch.manual_seed(0)
    prior = latentar.build_prior("pixelcnn", (1, 4, 4), 4, preset="tiny", symbols=symbols,
                                 **({"embed_dim": 2} if symbols == "codes" else {}))
    data = grids()
    config = TrainConfig(**{**dict(steps=4, batch_size=8, log_every=1, eval_every=2), **overrides})
    evaluate = evaluate or (lambda model, accelerator: evaluate_prior(model, data, accelerator))
    return Trainer(prior, objective, data, config, out, evaluate=evaluate).fit()


@pytest.mark.parametrize("symbols,name,other", [("codes", "bits_per_code", "bits_per_dim"),
                                                ("pixels", "bits_per_dim", "bits_per_code")])
def test_training_lines_evaluations_and_curves_share_one_bits_name(tmp_path, symbols, name, other):
    done = train_prior(tmp_path / "prior", symbols)
    records = read_metrics(tmp_path / "prior")
    training = [r for r in records if "loss" in r]
    evaluations = [r for r in records if "eval" in r]
    assert [r["step"] for r in training] == [1, 2, 3, 4] and [r["step"] for r in evaluations] == [2, 4]
    for record in training:
        assert record[name] == pytest.approx(record["loss"] / math.log(2)) and other not in record
    assert all(name in r["eval"] and other not in r["eval"] for r in evaluations)
    assert name in done["train"] and name in done["eval"]
    assert records[-1]["step"] == 4 and records[-1]["eval"] == done["eval"]  # the final evaluation, done.json's
    assert read_done(tmp_path / "prior")["eval"] == done["eval"]

    (panel,) = stage_curves(tmp_path, ["prior"])
    assert panel.metric == name
    assert panel.train == [(r["step"], pytest.approx(r[name])) for r in training]  # the last update included
    assert panel.test == [(2, evaluations[0]["eval"][name]), (4, done["eval"][name])]


def test_items_per_sec_leaves_out_the_evaluations(tmp_path, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: clock[0])

    def one_second_per_batch(model, batch):
        clock[0] += 1.0
        return prior_objective(model, batch)

    def slow_evaluation(model, accelerator):
        clock[0] += 1000.0
        return {"score": 1.0}

    train_prior(tmp_path, "pixels", one_second_per_batch, slow_evaluation, steps=6, log_every=2, eval_every=1)
    speeds = [r["items_per_sec"] for r in read_metrics(tmp_path) if "loss" in r]
    assert speeds == [8.0, 8.0, 8.0]  # 8 items a batch, one batch a second, evaluations or not


def test_curves_png_draws_one_point_and_many(tmp_path):
    one = Panel("prior", "bits_per_dim", [(1, 0.9702)], [(1, 0.98)])
    many = Panel("vqvae", "psnr", [(s, 20 + math.log(s)) for s in range(1, 2001)], [(1000, 25.0), (2000, 26.0)])
    for panels in ([one], [many, one]):
        path = plot_curves(panels, tmp_path / "curves.png")
        width, height = Image.open(path).size
        assert height > 200 and width > 400 * len(panels)
    assert not list(tmp_path.glob(".*"))  # written atomically: no temporary left beside it

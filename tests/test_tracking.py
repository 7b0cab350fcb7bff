"""Trackers and previews: TensorBoard event files hold what metrics.jsonl holds (and the sample
grids), a resumed run continues the same series, a missing tracker package is named, and the
grids drawn as training goes change nothing about the training."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from prior_cases import binary_grids, tiny_pixelcnn
from torch.utils.data import TensorDataset

import latentar
from latentar.config import RecipeError, recipe_from_dict
from latentar.evaluation import evaluate_prior, evaluate_vqvae
from latentar.plan import check_training
from latentar.training import TrainConfig, Trainer, prior_objective, read_done, read_metrics, tracking, vqvae_objective
from latentar.training.previews import reconstruction_preview, sample_preview
from latentar.training.tracking import TrackerNotInstalledError

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402


def prior_trainer(out: Path, objective=prior_objective, **overrides) -> Trainer:
    data = binary_grids(64)
    config = TrainConfig(**{**dict(steps=6, batch_size=16, log_every=1, eval_every=3, save_every=3, ema_decay=0.9,
                                   report_to="tensorboard", sample_every=3), **overrides})
    return Trainer(tiny_pixelcnn(), objective, data, config, out, evaluate=lambda m, acc: evaluate_prior(m, data, acc),
                   preview=sample_preview(levels=2))


def events(out: Path):
    accumulator = event_accumulator.EventAccumulator(str(out / "logs" / "latentar"),
                                                     size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def expected_scalars(out: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} of metrics.jsonl (its last line holds the final evaluation, done.json's)."""
    records = read_metrics(out)
    assert records[-1]["step"] == read_done(out)["step"] and records[-1]["eval"] == read_done(out)["eval"]
    series: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for key, value in record.items():
            pairs = value.items() if key == "eval" else [(key, value)]
            for name, number in pairs:
                if key != "step" and isinstance(number, (int, float)):
                    tag = f"eval/{name}" if key == "eval" else name
                    series.setdefault(tag, []).append((record["step"], float(number)))
    return series


def logged_scalars(out: Path) -> dict[str, list[tuple[int, float]]]:
    found = events(out)
    return {tag: [(e.step, e.value) for e in found.Scalars(tag)] for tag in found.Tags()["scalars"]}


def assert_same_series(out: Path) -> None:
    expected, logged = expected_scalars(out), logged_scalars(out)
    assert sorted(logged) == sorted(expected)
    for tag, points in expected.items():
        assert [s for s, _ in logged[tag]] == [s for s, _ in points], tag
        assert [v for _, v in logged[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag


def test_tensorboard_events_hold_metrics_jsonl_the_sample_grids_and_the_hyperparameters(tmp_path):
    prior_trainer(tmp_path).fit()
    assert_same_series(tmp_path)
    assert {"loss", "lr", "items_per_sec", "bits_per_dim", "eval/bits_per_dim"} <= set(logged_scalars(tmp_path))

    images = events(tmp_path).Images("samples")
    assert [e.step for e in images] == [3, 6]
    for event in images:  # the tracked image is the grid written to samples/
        tracked = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)))
        written = np.asarray(Image.open(tmp_path / "samples" / f"step_{event.step:08d}.png"))
        assert tracked.shape[:2] == written.shape[:2] and (tracked.reshape(written.shape) == written).all()

    # HParams: in the run's own folder, with the final test scores as metrics of the logged eval series
    assert not [p for p in (tmp_path / "logs" / "latentar").iterdir() if p.is_dir()]
    content = events(tmp_path).PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["train.lr"].number_value == pytest.approx(1e-3)
    assert session.hparams["model.name"].string_value == "pixelcnn"
    assert session.hparams["train.grad_clip"].string_value == "none"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metrics = {info.name.tag for info in experiment.metric_infos}
    assert metrics == {f"eval/{name}" for name in read_done(tmp_path)["eval"]}
    assert metrics <= set(logged_scalars(tmp_path))
    final = read_done(tmp_path)["eval"]["bits_per_dim"]
    assert logged_scalars(tmp_path)["eval/bits_per_dim"][-1] == (6, pytest.approx(final, rel=1e-6))


class CrashAt:
    """The prior objective, raising at micro-batch ``call`` (0-based): a crash in mid-run."""

    def __init__(self, call: int):
        self.call, self.calls = call, 0

    def __call__(self, model, batch):
        self.calls += 1
        if self.calls - 1 == self.call:
            raise RuntimeError("crash")
        return prior_objective(model, batch)


def test_a_resumed_run_continues_the_same_event_series(tmp_path):
    with pytest.raises(RuntimeError, match="crash"):
        prior_trainer(tmp_path, CrashAt(4), steps=6).fit()  # logged 1..4, checkpoint at 3, dies in update 5
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]
    assert [s for s, _ in logged_scalars(tmp_path)["loss"]] == [1, 2, 3, 4]
    time.sleep(1.1)  # event file names carry the second they were opened: keep the order of the two runs
    prior_trainer(tmp_path, steps=6).fit(resume=True)
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5, 6]
    assert_same_series(tmp_path)  # step 4 of the crashed run is replaced, not doubled
    assert len(list((tmp_path / "logs" / "latentar").glob("events.*"))) == 2  # one folder, two sessions

    time.sleep(1.1)
    prior_trainer(tmp_path, steps=8).fit(resume=True)  # a finished run, extended
    logged, expected = logged_scalars(tmp_path), expected_scalars(tmp_path)
    assert [s for s, _ in logged["loss"]] == list(range(1, 9))
    assert [v for _, v in logged["loss"]] == pytest.approx([v for _, v in expected["loss"]], rel=1e-6)
    # the evaluations: update 3's, the first session's final one at 6 (done.json then), and 8's
    assert [s for s, _ in logged["eval/bits_per_dim"]] == [3, 6, 8]
    assert [r["step"] for r in read_metrics(tmp_path) if "eval" in r] == [3, 6, 8]

    prior_trainer(tmp_path, steps=8).fit(resume=True)  # nothing left to train: no line is added or lost
    assert [r["step"] for r in read_metrics(tmp_path)] == list(range(1, 9))


def test_a_missing_tracker_package_is_named_with_its_install_command(tmp_path, monkeypatch):
    assert TrainConfig(report_to="wandb").report_to == "wandb"  # a valid choice; the package is checked later
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec",
                        lambda name: None if name in ("wandb", "tensorboard") else real(name))
    with pytest.raises(TrackerNotInstalledError, match=r"needs the wandb package.*pip install wandb"):
        prior_trainer(tmp_path, report_to="wandb")
    with pytest.raises(ImportError, match=r'tensorboard package.*pip install -e "\.\[tensorboard\]"'):
        prior_trainer(tmp_path, report_to="all")
    recipe = recipe_from_dict({"data": {}, "prior": {}, "prior_train": {"report_to": "wandb"}})
    with pytest.raises(RecipeError, match=r"prior_train.report_to: .*pip install wandb"):
        check_training(recipe, "cpu")
    with pytest.raises(ValueError, match=r"TrainConfig.report_to must be one of .*got 'mlflow'"):
        TrainConfig(report_to="mlflow")


def test_sample_every_needs_a_preview(tmp_path):
    with pytest.raises(ValueError, match="sample_every = 2 needs a preview"):
        Trainer(tiny_pixelcnn(), prior_objective, binary_grids(64), TrainConfig(steps=2, sample_every=2), tmp_path)


def tiny_vqvae_run(out: Path, **overrides) -> Trainer:
    images = torch.randint(0, 256, (32, 1, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    data = TensorDataset(images, torch.zeros(32, dtype=torch.long))
    torch.manual_seed(0)
    vqvae = latentar.VQVAE((1, 8, 8), preset="tiny")
    config = TrainConfig(steps=4, batch_size=8, log_every=2, **overrides)
    trainer = Trainer(vqvae, vqvae_objective, data, config, out, evaluate=lambda m, acc: evaluate_vqvae(m, data, acc),
                      preview=reconstruction_preview(images[:4], nrow=4))
    trainer.fit()
    return trainer


def test_vqvae_previews_are_tracked_and_change_nothing_about_the_training(tmp_path):
    plain = tiny_vqvae_run(tmp_path / "plain")
    watched = tiny_vqvae_run(tmp_path / "watched", report_to="tensorboard", sample_every=2)
    for (name, a), b in zip(plain.model.state_dict().items(), watched.model.state_dict().values()):
        assert torch.equal(a, b), name
    untimed = [[{k: v for k, v in r.items() if k != "items_per_sec"} for r in read_metrics(tmp_path / run)]
               for run in ("plain", "watched")]
    assert untimed[0] == untimed[1]
    assert sorted(p.name for p in (tmp_path / "watched" / "samples").iterdir()) == ["step_00000002.png",
                                                                                    "step_00000004.png"]
    grid = np.asarray(Image.open(tmp_path / "watched" / "samples" / "step_00000004.png"))
    assert grid.shape[:2] == (2 * (8 + 2) + 2, 4 * (8 + 2) + 2)  # originals above reconstructions, 4 a row
    assert [e.step for e in events(tmp_path / "watched").Images("samples")] == [2, 4]
    assert not (tmp_path / "plain" / "samples").exists() and not (tmp_path / "plain" / "logs").exists()


def test_a_vqvae2_top_prior_cannot_be_previewed_alone():
    sections = {"data": {}, "vqvae": {"hierarchical": True}, "vqvae_train": {}, "prior": {}, "bottom_prior": {},
                "bottom_prior_train": {"sample_every": 5}}
    check_training(recipe_from_dict({**sections, "prior_train": {}}), "cpu")  # the bottom stage draws both levels
    with pytest.raises(RecipeError, match="prior_train.sample_every: the top codes of a VQ-VAE-2 cannot be decoded"):
        check_training(recipe_from_dict({**sections, "prior_train": {"sample_every": 5}}), "cpu")

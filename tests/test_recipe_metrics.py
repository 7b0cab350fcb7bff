"""A recipe's ``[metrics]`` end to end on the tiny recipe (tests/recipe_cases.py): the classifier
stage trained and then reused, the sample metrics in summary.json, the prior's model card and
``latentar report``; and the validation that refuses a [metrics] that cannot run, before any work."""

from __future__ import annotations

import pytest
from recipe_cases import write_recipe

from latentar.config import RecipeError, load_recipe
from latentar.plan import validate
from latentar.quality import library
from latentar.runs import run_recipe
from latentar.runs.report import markdown_table, run_row
from latentar.runs.summary import FORMAT, read_summary

CONDITIONAL = {"name": "pixelcnn", "preset": "tiny", "class_conditional": True, "class_dropout": 0.2}
METRICS = {"n": 8, "classifier_steps": 5}
SAMPLE_KEYS = ("fid", "kid_mean", "kid_std", "precision", "recall", "density", "coverage")


def test_recipe_metrics_end_to_end(image_folder, tmp_path):
    path = write_recipe(tmp_path, image_folder, prior=CONDITIONAL, sampling={"cfg_scale": 2.0, "per_class": 2},
                        metrics=METRICS)
    out = tmp_path / "run"
    summary = run_recipe(load_recipe(path), out)
    metrics = summary["metrics"]
    assert summary["format"] == FORMAT == 4 and read_summary(out) == summary
    assert metrics["features"].startswith("classifier:RUN/classifier (classifier of image_folder")
    assert (metrics["n"], metrics["reference"], metrics["reference_n"]) == (8, "image_folder/test", 8)
    assert metrics["classifier"]["steps"] == 5 and metrics["classifier"]["reused"] is False
    samples, floor = metrics["samples"], metrics["reconstructions"]
    assert samples["sampling"] == {"temperature": 1.0, "top_k": None, "top_p": None, "cfg_scale": 2.0, "seed": 0,
                                   "classes": "cycled"}  # [sampling]'s knobs, [metrics]'s seed
    assert 0 <= samples["class_accuracy"] <= 1 and "class_accuracy" not in floor  # reconstructions ask no class
    for key in SAMPLE_KEYS:
        assert isinstance(samples[key], float) and isinstance(floor[key], float), key
    card = (out / "prior" / "model" / "README.md").read_text()
    sample_section = card.split("## Sample metrics")[1].split("## Use")[0]
    assert f"| fid | {samples['fid']:.6g} |" in sample_section and "Reconstructions:" in sample_section
    assert str(tmp_path) not in card  # a card names no local path
    assert metrics["classifier"]["wall_time_s"] > 0
    row = run_row(out)
    assert (row["fid"], row["precision"], row["class_accuracy"]) == (samples["fid"], samples["precision"],
                                                                     samples["class_accuracy"])
    assert row["measured"].startswith("8 vs image_folder/test, classifier (classifier of image_folder")
    assert f"{samples['fid']:.2f}" in markdown_table([row])

    again = run_recipe(load_recipe(path, ["metrics.seed=1"]), out)  # the classifier stage is reused
    assert again["metrics"]["classifier"]["reused"] is True
    assert again["metrics"]["features"] == metrics["features"] and again["metrics"]["samples"]["sampling"]["seed"] == 1
    with pytest.raises(RecipeError, match="classifier was made by another recipe"):
        run_recipe(load_recipe(path, ["metrics.classifier_steps=6"]), out)


@pytest.mark.parametrize("metrics, message", [
    ({"n": 1}, "metrics.n = 1: precision/recall and density/coverage need more than k = 3"),
    ({"n": 8, "features": "vgg"}, "metrics.features must be 'classifier'"),
    ({"n": 8, "features": "classifier:nowhere"}, "metrics.features: nowhere"),
    ({"n": 8, "features": "inception", "inception_weights": "missing.pth"}, "--inception-weights missing.pth"),
    ({"n": -1}, "metrics.n must be an integer >= 0"),
    ({"n": 8, "reference": "val"}, "metrics.reference"),
])
def test_recipe_metrics_validation(image_folder, tmp_path, metrics, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        validate(load_recipe(write_recipe(tmp_path, image_folder, metrics=metrics)))


def test_recipe_metrics_without_the_extra_fail_before_any_work(image_folder, tmp_path, monkeypatch):
    def missing(module):
        raise library.MissingExtraError(f"sample metrics need the package torch-fidelity ...: {library.INSTALL}")

    monkeypatch.setattr("latentar.plan.fidelity", missing)
    with pytest.raises(RecipeError, match=r"\[metrics\]: .*pip install 'latentar\[metrics\]'"):
        run_recipe(load_recipe(write_recipe(tmp_path, image_folder, metrics=METRICS)), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    validate(load_recipe(write_recipe(tmp_path, image_folder, metrics={"n": 0})))  # off: no extra needed

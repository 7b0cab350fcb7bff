"""``latentar sweep`` end to end on a tiny class-conditional code prior trained with class dropout
(untrained weights: the sweep's machinery is under test, not the numbers), and its refusals."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from test_classifier import classifier_run, data_args, image_folder  # noqa: F401  (fixtures)

import latentar
from latentar.cli import main
from latentar.vqvae import VQVAE


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny VQ-VAE (4×4 grids of 8 codes) and class-conditional priors over its codes, with and
    without class dropout, random (not initial) weights -> their folder."""
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    models = {"vqvae": VQVAE((3, 8, 8), preset="tiny")}
    for name, dropout in (("guided", 0.1), ("plain", 0.0)):
        models[name] = latentar.build_prior("pixelcnn", (1, 4, 4), 8, num_classes=2, symbols="codes", preset="tiny",
                                            embed_dim=4, class_dropout=dropout)
    for name, model in models.items():
        with torch.no_grad():
            for weights in model.parameters():  # random weights: each class its codes, each code its image
                weights.normal_(0, 0.5)
        model.save(folder / name)
    return folder


def sweep_args(models, classifier, images, out, *knobs: str, prior: str = "guided") -> list[str]:
    return ["sweep", "--prior", str(models / prior), "--vqvae", str(models / "vqvae"), *data_args(images),
            "-n", "8", "--features", f"classifier:{classifier}", "--out", str(out), *knobs, "--quiet"]


def test_sweep_of_guidance_and_temperature(models, classifier_run, image_folder, tmp_path, capsys):  # noqa: F811
    run, _ = classifier_run
    out = tmp_path / "sweep"
    assert main(sweep_args(models, run, image_folder, out, "--cfg-scale", "1,2,4", "--temperature", "0.5,1",
                           "--top-k", "6")) == 0, capsys.readouterr().err
    result = json.loads((out / "sweep.json").read_text())
    assert result["swept"] == {"temperature": [0.5, 1.0], "cfg_scale": [1.0, 2.0, 4.0]}
    assert result["fixed"] == {"temperature": 1.0, "top_k": 6, "top_p": None, "cfg_scale": 1.0, "seed": 0,
                               "batch_size": None}
    points = result["points"]
    assert [(p["knob"], p["value"]) for p in points] == [("temperature", 0.5), ("temperature", 1.0),
                                                         ("cfg_scale", 1.0), ("cfg_scale", 2.0), ("cfg_scale", 4.0)]
    for p in points:
        assert (p["features"], p["n"], p["reference"]) == (result["features"], 8, "image_folder/test")
        assert p["sampling"][p["knob"]] == p["value"] and p["sampling"]["top_k"] == 6 and p["sampling"]["seed"] == 0
        assert 0 <= p["class_accuracy"] <= 1 and 0 <= p["precision"] <= 1 and 0 <= p["recall"] <= 1
        assert all(key in p for key in ("fid", "kid_mean", "kid_std", "density", "coverage"))
    # temperature 1 with cfg 1 is one setting: drawn once, with the same seed, so the same numbers
    assert points[1]["fid"] == points[2]["fid"] and points[1]["sampling"] == points[2]["sampling"]
    assert len({p["fid"] for p in points[2:]}) == 3  # guidance changes the draws
    with Image.open(out / "sweep.png") as figure:
        assert figure.format == "PNG" and figure.width > 2 * figure.height  # three panels side by side
    assert json.loads(capsys.readouterr().out.rsplit("\nwrote ", 1)[0]) == result


@pytest.mark.parametrize("knobs, prior, message", [
    (["--cfg-scale", "1,2"], "plain", "cfg_scale 2.0 needs a class-conditional prior trained with class_dropout"),
    (["--top-k", "4,9"], "guided", "top_k 9 is out of range"),
    (["--temperature", "1"], "guided", "give at least one knob several values"),
    (["--temperature", "0,1"], "guided", "temperature must be a finite number > 0"),
    (["--top-p", "0.5,1.5"], "guided", "top_p must be a number in (0, 1]"),
])
def test_sweep_refuses_bad_knobs_before_drawing(models, classifier_run, image_folder, tmp_path, capsys,  # noqa: F811
                                               knobs, prior, message):
    run, _ = classifier_run
    assert main(sweep_args(models, run, image_folder, tmp_path / "out", *knobs, prior=prior)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "sweep.json").exists()


@pytest.mark.parametrize("text, message", [("1,,2", "'' in '1,,2' is not one"), ("1,x", "'x' in '1,x'"),
                                           ("2,2", "repeats a value")])
def test_sweep_refuses_a_bad_list(models, classifier_run, image_folder, tmp_path, capsys, text, message):  # noqa: F811
    run, _ = classifier_run
    with pytest.raises(SystemExit):
        main(sweep_args(models, run, image_folder, tmp_path / "out", "--cfg-scale", text))
    assert message in capsys.readouterr().err

"""The dataset classifier (``latentar train-classifier``) and ``latentar eval-samples`` end to
end, on the tiny two-class ``image_folder`` dataset of the conftest (8×8 RGB: bars vs blobs)."""

from __future__ import annotations

import io
import json
import shutil
import sys

import numpy as np
import pytest
import torch
from conftest import write_image_folder
from PIL import Image

import latentar
from latentar.cli import main
from latentar.data import load_dataset
from latentar.runs.classifier import evaluate_classifier
from latentar.saving import WEIGHTS_FILE, NotAModelError, read_config
from latentar.vqvae import VQVAE

DATA = ["--data", "image_folder", "--data-option", "size=8"]


def data_args(folder) -> list[str]:
    return [*DATA, "--data-root", str(folder)]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """The conftest's tiny dataset, once for this module."""
    return write_image_folder(tmp_path_factory.mktemp("data") / "images")


@pytest.fixture(scope="module")
def classifier_run(image_folder, tmp_path_factory):
    """A classifier trained for a few updates -> (its run folder, the test record it printed)."""
    run = tmp_path_factory.mktemp("runs") / "classifier"
    with pytest.MonkeyPatch.context() as patch:
        printed = io.StringIO()
        patch.setattr(sys, "stdout", printed)
        assert main(["train-classifier", *data_args(image_folder), "--out", str(run), "--steps", "40",
                     "--batch-size", "8", "--lr", "0.01", "--width", "4", "--feature-dim", "8", "--quiet"]) == 0
    return run, json.loads(printed.getvalue())


def test_classifier_records_its_test_accuracy_and_loads_like_any_model(classifier_run, image_folder):
    run, printed = classifier_run
    model = latentar.load(run / "model")
    assert isinstance(model, latentar.ImageClassifier) and model.config.feature_dim == 8
    test = load_dataset("image_folder", "test", image_folder, size=8)
    scored = evaluate_classifier(model, test)
    assert model.config.test_accuracy == printed["accuracy"] == scored["accuracy"]  # recorded, and true
    assert scored["accuracy"] >= 0.75  # bars vs blobs: learned, far above chance (0.5)
    assert model.config.dataset == "image_folder" and "test acc" in model.description()
    assert f"{printed['accuracy']:.4f}" in (run / "model" / "README.md").read_text()
    images = torch.stack([test[i][0] for i in range(4)])
    assert model.features(images).shape == (4, 8) and model(images).shape == (4, 2)
    again = latentar.ImageClassifier.from_pretrained(run / "model")
    assert torch.equal(again(images), model(images))  # the same weights
    with pytest.raises(ValueError, match=r"uint8 images \(B, 3, 8, 8\), got torch.float32"):
        model(images.float())


def test_a_tampered_classifier_is_refused(classifier_run, tmp_path):
    run, _ = classifier_run
    copy = shutil.copytree(run / "model", tmp_path / "model")
    assert read_config(copy)["model_type"] == "classifier"
    weights = copy / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(NotAModelError, match="does not match the sha256"):
        latentar.load(copy)


def test_classifier_needs_classes(tmp_path, capsys):
    flat = tmp_path / "flat"
    for split in ("train", "test"):
        (flat / split).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(flat / split / f"{i}.png")
    assert main(["train-classifier", *data_args(flat), "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    assert "has 1 class(es); a classifier needs at least 2" in capsys.readouterr().err


def eval_samples(args: list[str], capsys) -> dict:
    assert main(["eval-samples", *args, "--quiet"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_eval_samples_of_a_class_conditional_code_prior(classifier_run, image_folder, tmp_path, capsys):
    run, _ = classifier_run
    torch.manual_seed(0)
    VQVAE((3, 8, 8), preset="tiny").save(tmp_path / "vqvae")  # 4×4 grids of 8 codes
    latentar.build_prior("pixelcnn", (1, 4, 4), 8, num_classes=2, symbols="codes", preset="tiny",
                         embed_dim=4).save(tmp_path / "prior")
    out = tmp_path / "scores.json"
    args = ["--prior", str(tmp_path / "prior"), "--vqvae", str(tmp_path / "vqvae"), *data_args(image_folder),
            "-n", "8", "--features", f"classifier:{run}", "--out", str(out)]
    result = eval_samples(args, capsys)
    assert result == json.loads(out.read_text())
    assert result["features"].startswith(f"classifier:{run / 'model'} (classifier of image_folder, test acc")
    assert (result["n"], result["reference"], result["reference_n"], result["k"]) == (8, "image_folder/test", 8, 3)
    assert result["classifier"] == result["features"] and 0 <= result["class_accuracy"] <= 1
    sampling = result["source"]["sampling"]
    assert result["fid"] > 0 and sampling["seed"] == 0 and sampling["classes"] == "cycled"
    for key in ("kid_mean", "kid_std", "precision", "recall", "density", "coverage", "is_mean", "is_std"):
        assert np.isfinite(result[key]), key
    assert eval_samples(args, capsys) == result  # fixed seeds: the same draws, the same numbers
    judged = eval_samples([*args, "--classifier", str(run)], capsys)  # judged by a classifier named apart
    assert (judged["class_accuracy"], judged["classifier"]) == (result["class_accuracy"], result["classifier"])
    floor = eval_samples(["--reconstructions", "--vqvae", str(tmp_path / "vqvae"), *data_args(image_folder),
                          "-n", "8", "--features", f"classifier:{run}"], capsys)
    assert floor["source"]["reconstructions_by"] == str(tmp_path / "vqvae") and "class_accuracy" not in floor


def test_eval_samples_of_the_reference_itself_from_npy_and_folder(classifier_run, image_folder, tmp_path, capsys):
    run, _ = classifier_run
    test = load_dataset("image_folder", "test", image_folder, size=8)
    images = torch.stack([test[i][0] for i in range(len(test))])  # (8, 3, 8, 8)
    np.save(tmp_path / "same.npy", images.numpy())
    (tmp_path / "same").mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / "same" / f"{i:03d}.png")
    for source in (tmp_path / "same.npy", tmp_path / "same"):
        result = eval_samples(["--images", str(source), *data_args(image_folder), "-n", "8",
                               "--features", f"classifier:{run}/model"], capsys)
        assert result["source"]["images"] == str(source)
        assert abs(result["fid"]) < 1e-3 and (result["precision"], result["recall"], result["coverage"]) == (1, 1, 1)
    shifted = eval_samples(["--images", str(tmp_path / "same.npy"), *data_args(image_folder), "-n", "8",
                            "--features", f"classifier:{run}", "--reference-n", "6"], capsys)
    assert shifted["reference_n"] == 6 and shifted["fid"] > 1e-3  # 8 images against 6 of them


def test_eval_samples_refusals(classifier_run, image_folder, tmp_path, capsys, monkeypatch):
    run, _ = classifier_run
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    np.save(tmp_path / "x.npy", np.zeros((8, 3, 8, 8), np.uint8))
    base = ["eval-samples", "--images", str(tmp_path / "x.npy"), *data_args(image_folder), "-n", "8"]
    assert main(base) == 2  # --features inception, the default, without its weights
    assert "weights-inception-2015-12-05-6726825d.pth" in capsys.readouterr().err
    assert main(["eval-samples", "--reconstructions", *data_args(image_folder), "--features",
                 f"classifier:{run}"]) == 2
    assert "--reconstructions needs --vqvae" in capsys.readouterr().err
    assert main([*base, "--features", f"classifier:{tmp_path}"]) == 2
    assert "config.json is missing" in capsys.readouterr().err

"""``latentar complete --mask`` and ``latentar eval --mask``: a region named on the command line,
redrawn or scored given the rest, exactly (`Prior.log_prob(known=)`)."""

from __future__ import annotations

import json

import pytest
import torch
from prior_cases import tiny_prior

from latentar import cli, load
from latentar.data import load_dataset
from latentar.priors.orders import raster

SIZE = ["--data-option", "size=4"]


@pytest.fixture
def saved_prior(tmp_path):
    """A tiny raster (pixelcnn) prior of (3, 4, 4) pixel images, saved."""
    tiny_prior("pixelcnn", (3, 4, 4), 256).save(tmp_path / "prior")
    return tmp_path / "prior"


def test_eval_mask_scores_the_region_given_the_rest(capsys, tmp_path, image_folder, saved_prior):
    argv = ["eval", "--model", str(saved_prior), "--data", "image_folder", "--data-root", str(image_folder), *SIZE,
            "--device", "cpu"]
    assert cli.main([*argv, "--mask", "bottom"]) == 0
    scores = json.loads(capsys.readouterr().out)
    prior, test = load(saved_prior), load_dataset("image_folder", "test", str(image_folder), size=4)
    x = torch.stack([test[i][0] for i in range(len(test))]).long()
    per_symbol = prior.log_prob_per_symbol(x, order=raster(4, 4))  # (B, C, H, W): the chain rule's terms
    expected = -per_symbol[:, :, 2:].double().sum().item()  # bottom half: rows 2 and 3
    assert scores["region"] == "bottom" and scores["region_positions"] == 8
    assert scores["dims"] == len(test) * 3 * 8 and scores["nats"] == pytest.approx(expected, rel=1e-6)
    assert cli.main([*argv, "--mask", "centre"]) == 2  # not a raster suffix: a raster prior cannot
    assert "raster prefix" in capsys.readouterr().err


def test_complete_mask_redraws_the_region_and_prints_its_nats(capsys, tmp_path, image_folder, saved_prior):
    argv = ["complete", "--prior", str(saved_prior), "--data", "image_folder", "--data-root", str(image_folder),
            *SIZE, "-n", "2", "--samples", "2", "--out", str(tmp_path / "c.png"), "--device", "cpu"]
    assert cli.main([*argv, "--mask", "box:2,0,4,4"]) == 0  # rows 2..3: the bottom half
    printed = json.loads(capsys.readouterr().out)
    assert printed["region"] == "box:2,0,4,4" and len(printed["region_nats_per_image"]) == 2
    assert printed["region_nats"] == pytest.approx(sum(printed["region_nats_per_image"]) / 2)
    assert (tmp_path / "c.png").is_file()
    assert cli.main([*argv, "--keep-rows", "2"]) == 0  # the same region by rows: the same nats
    assert json.loads(capsys.readouterr().out)["region_nats_per_image"] == printed["region_nats_per_image"]


def test_complete_refuses_a_region_a_raster_prior_cannot_redraw(capsys, tmp_path, image_folder, saved_prior):
    code = cli.main(["complete", "--prior", str(saved_prior), "--data", "image_folder", "--data-root",
                     str(image_folder), *SIZE, "--mask", "top", "--out", str(tmp_path / "c.png")])
    err = capsys.readouterr().err
    assert code == 2 and "generates in raster order only" in err and "raster prefix" in err, err
    assert not (tmp_path / "c.png").exists()

"""`latentar report`: finished runs side by side, one row each, from their summary files."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from PIL import Image
from recipe_cases import PIXELSNAIL, write_recipe

import latentar
from latentar.cli import main
from latentar.runs.report import COLUMNS, run_row
from latentar.runs.summary import FORMAT, read_summary

COLUMNS_INDEX = {name: i for i, name in enumerate(COLUMNS)}  # column name -> its cell in a table row

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A `latentar run` (VQ-VAE + PixelSNAIL) and a `train-prior` run (PixelCNN on pixels)."""

    tmp = tmp_path_factory.mktemp("report")
    root = make_images(tmp)
    recipe = write_recipe(tmp, root, vqvae_train={"steps": 2, "batch_size": 8}, prior=PIXELSNAIL,
                          prior_train={"steps": 2, "batch_size": 8}, sampling={"n": 2, "reconstructions": 2})
    assert main(["--quiet", "run", str(recipe), "--out", str(tmp / "two_stage")]) == 0
    assert main(["--quiet", "train-prior", "--data", "image_folder", "--data-root", str(root), "--prior", "pixelcnn",
                 "--preset", "tiny", "--steps", "2", "--batch-size", "4", "--out", str(tmp / "pixels")]) == 0
    return tmp / "two_stage", tmp / "pixels"


def make_images(tmp):
    """A one-class image_folder of 8×8 noise: 8 train, 4 test images."""
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 8), ("test", 4)):
        folder = tmp / "images" / split / "noise"
        folder.mkdir(parents=True)
        for i in range(count):
            image = torch.randint(0, 256, (8, 8, 3), generator=generator, dtype=torch.uint8)
            Image.fromarray(image.numpy()).save(folder / f"{i}.png")
    return tmp / "images"


def test_report_prints_one_markdown_row_per_run(runs, capsys):
    capsys.readouterr()
    assert main(["report", *map(str, runs)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| run | data | prior | preset | parameters |") and len(lines) == 4
    two_stage, pixels = (line.split(" | ") for line in lines[2:])
    assert two_stage[0] == f"| {runs[0]}" and two_stage[2] == "pixelsnail" and two_stage[3] == "tiny"
    assert pixels[0] == f"| {runs[1]}" and pixels[2] == "pixelcnn"
    assert pixels[COLUMNS_INDEX["psnr"]] == "—" and two_stage[COLUMNS_INDEX["bits_per_dim"]] == "—"


def test_report_rows_hold_the_runs_own_numbers(runs, capsys):
    capsys.readouterr()
    assert main(["report", "--json", *map(str, runs)]) == 0
    two_stage, pixels = json.loads(capsys.readouterr().out)
    summary = json.loads((runs[0] / "summary.json").read_text())
    prior = summary["prior"]
    assert two_stage["data"] == "image_folder" and two_stage["updates"] == 2
    assert two_stage["nats_per_image"] == pytest.approx(prior["nats_per_image"])
    assert two_stage["bits_per_code"] == pytest.approx(prior["nats"] / prior["dims"] / math.log(2))
    assert two_stage["bits_per_code"] == pytest.approx(prior["bits_per_code"])
    assert two_stage["psnr"] == summary["vqvae"]["psnr"] and two_stage["codes_used"] == summary["vqvae"]["codes_used"]
    model = latentar.load(runs[0] / "prior" / "model")
    assert two_stage["parameters"] == sum(p.numel() for p in model.parameters())
    stage_times = [summary[k]["wall_time_s"] for k in ("vqvae", "codes", "prior", "images")]
    assert two_stage["wall_time_s"] == pytest.approx(sum(stage_times))

    trained = json.loads((runs[1] / "summary.json").read_text())
    assert pixels["bits_per_dim"] == trained["test"]["bits_per_dim"] and pixels["bits_per_code"] is None
    assert pixels["parameters"] == trained["parameters"] and pixels["updates"] == 2
    assert pixels["wall_time_s"] == trained["wall_time_s"] > 0


def test_a_stage_folder_reads_from_done_json(runs):
    row = run_row(runs[0] / "vqvae")
    done = json.loads((runs[0] / "vqvae" / "done.json").read_text())
    assert row["psnr"] == done["eval"]["psnr"] and row["updates"] == 2 and row["prior"] is None
    assert row["wall_time_s"] == json.loads((runs[0] / "summary.json").read_text())["vqvae"]["wall_time_s"]
    assert row["parameters"] == sum(p.numel() for p in latentar.load(runs[0] / "vqvae" / "model").parameters())


def test_every_stage_is_summarised_one_way(runs):
    run = json.loads((runs[0] / "summary.json").read_text())
    assert run["prior"] == json.loads((runs[0] / "prior" / "summary.json").read_text())
    assert run["vqvae"] == json.loads((runs[0] / "vqvae" / "summary.json").read_text())
    assert run["codes"] == json.loads((runs[0] / "codes" / "summary.json").read_text())
    alone = json.loads((runs[1] / "summary.json").read_text())  # train-prior
    assert alone["stage"] == run["prior"]["stage"] == "prior" and alone["format"] == run["format"] == FORMAT
    assert set(alone) - set(alone["test"]) == set(run["prior"]) - set(run["prior"]["test"])
    assert alone["test"]["bits_per_dim"] == alone["bits_per_dim"]


def test_folders_of_earlier_versions_report_as_before(runs, tmp_path):
    """Summaries of format 1: a run's stage entries of flat scores (timing.json in the stage
    folders), a train-prior summary with its scores under "test" only."""
    old = [tmp_path / "two_stage", tmp_path / "pixels"]
    for new, copy in zip(runs, old):
        shutil.copytree(new, copy)
    run = json.loads((old[0] / "summary.json").read_text())
    for name in ("vqvae", "prior"):
        record = run[name]
        run[name] = {**record["test"], "steps": record["steps"], "reused": record["reused"],
                     "wall_time_s": record["wall_time_s"]}
        (old[0] / name / "summary.json").unlink()
        (old[0] / name / "timing.json").write_text(json.dumps({"wall_time_s": record["wall_time_s"]}))
    run["codes"] = {"wall_time_s": run["codes"]["wall_time_s"], "folder": run["codes"]["folder"]}
    del run["format"]
    (old[0] / "summary.json").write_text(json.dumps(run))
    alone = json.loads((old[1] / "summary.json").read_text())
    (old[1] / "summary.json").write_text(json.dumps({key: alone[key] for key in FORMAT_1_PRIOR}))
    for new, copy in zip(runs, old):
        assert run_row(copy) == {**run_row(new), "run": str(copy)}
    for stage in ("prior", "vqvae"):  # a bare stage folder gives no data or preset
        assert run_row(old[0] / stage) == {**run_row(runs[0] / stage), "run": str(old[0] / stage), "data": None,
                                           "preset": None}


def test_format_2_summaries_read_as_format_3(runs, tmp_path):
    """Format 2 named a code prior's training bits per code bits_per_dim and held code_bits_per_pixel_dim."""
    copy = tmp_path / "two_stage"
    shutil.copytree(runs[0], copy)
    run = json.loads((copy / "summary.json").read_text())
    assert "bits_per_code" in run["prior"]["train"] and "code_bits_per_pixel_dim" not in run
    old = json.loads(json.dumps(run))
    old["format"] = old["prior"]["format"] = old["vqvae"]["format"] = old["codes"]["format"] = 2
    old["prior"]["train"]["bits_per_dim"] = old["prior"]["train"].pop("bits_per_code")
    old["code_bits_per_pixel_dim"] = 1.0
    (copy / "summary.json").write_text(json.dumps(old))
    assert read_summary(copy) == run
    (copy / "prior" / "summary.json").write_text(json.dumps(old["prior"]))
    assert read_summary(copy / "prior") == run["prior"]
    assert run_row(copy) == {**run_row(runs[0]), "run": str(copy)}


FORMAT_1_PRIOR = ("data", "prior", "preset", "head", "arch", "class_conditional", "class_dropout", "train_items",
                  "parameters", "steps", "ema", "train", "test", "wall_time_s")


def test_a_folder_that_is_no_run_is_refused_by_name(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert f"{tmp_path} holds neither summary.json nor done.json" in capsys.readouterr().err

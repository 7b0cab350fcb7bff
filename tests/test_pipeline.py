"""Recipe runs end to end on a tiny generated image folder: every promised output, reuse of
finished stages, resumption of an interrupted stage, and a 2-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from recipe_cases import PIXELS as PIXEL_MODE
from recipe_cases import PIXELSNAIL, write_recipe

import latentar
from latentar.cli import main
from latentar.config import RecipeError, load_recipe
from latentar.runs import run_recipe
from latentar.training import trainer as trainer_module

PIXELS = {**PIXEL_MODE, "prior": {"name": "pixelcnn", "preset": "tiny", "class_conditional": True},
          "prior_train": {"steps": 4, "batch_size": 8, "log_every": 1, "save_every": 2},
          "sampling": {"per_class": 3}}
CODES = {"vqvae_train": {"steps": 4, "batch_size": 8, "log_every": 2}, "prior": PIXELSNAIL,
         "sampling": {"n": 6, "nrow": 3, "reconstructions": 5}}
HIERARCHICAL = {**CODES, "bottom_prior": PIXELSNAIL, "bottom_prior_train": {"steps": 3, "batch_size": 8}}


def key_tree(obj) -> object:
    """The nested keys of a summary (values dropped), to compare summaries' formats."""
    return {k: key_tree(v) for k, v in obj.items()} if isinstance(obj, dict) else None


@pytest.mark.slow
def test_two_stage_run_leaves_every_output_and_reuses_finished_stages(tmp_path, image_folder, capsys):
    recipe = write_recipe(tmp_path, image_folder, **CODES)
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "--set", "sampling.temperature=0.8"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads(capsys.readouterr().out.split("\nwrote ")[0]) == summary
    for name in ("recipe.json", "summary.json", "samples.png", "reconstructions.png", "curves.png",
                 "vqvae/metrics.jsonl", "vqvae/model/config.json", "prior/metrics.jsonl",
                 "prior/model/model.safetensors", "prior/model/codes_source.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "recipe.json").read_text())["sampling"]["temperature"] == 0.8
    assert summary["mode"] == "codes" and summary["num_processes"] == 1
    assert {"psnr", "perplexity", "wall_time_s"} <= set(summary["vqvae"])
    assert {"bits_per_code", "nats_per_image", "wall_time_s"} <= set(summary["prior"])
    assert set(summary["prior"]["train"]) & {"bits_per_code", "bits_per_dim"} == {"bits_per_code"}  # one name
    assert summary["prior"]["steps"] == 3 and not summary["prior"]["reused"]
    assert latentar.load(out / "prior" / "model").spec.shape == (1, 4, 4)

    samples = (out / "samples.png").read_bytes()
    again = run_recipe(load_recipe(recipe, ["sampling.temperature=0.8"]), out)
    assert again["vqvae"]["reused"] and again["prior"]["reused"]
    assert again["prior"]["bits_per_code"] == summary["prior"]["bits_per_code"]
    assert (out / "samples.png").read_bytes() == samples  # same models, same seed
    with pytest.raises(RecipeError, match=r"prior was made by another recipe \(changed: prior_train.steps\)"):
        run_recipe(load_recipe(recipe, ["prior_train.steps=5"]), out)
    with pytest.raises(RecipeError, match=r"vqvae was made by another recipe \(changed: vqvae.beta\)"):
        run_recipe(load_recipe(recipe, ["vqvae.beta=0.5"]), out)

    prior_dir, vqvae_dir = str(out / "prior"), str(out / "vqvae")
    assert main(["sample", "--prior", prior_dir, "--vqvae", vqvae_dir, "-n", "4", "--save-codes",
                 "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.codes.safetensors").is_file()
    assert main(["complete", "--prior", prior_dir, "--vqvae", vqvae_dir, "--data", "image_folder",
                 "--data-root", str(image_folder), "--data-option", "size=8", "--keep-rows", "2", "-n", "2",
                 "--samples", "2", "--out", str(tmp_path / "c.png")]) == 0
    other = tmp_path / "copy_of_vq"  # the same weights elsewhere: the same fingerprint, accepted
    latentar.load(out / "vqvae" / "model").save(other)
    assert main(["sample", "--prior", prior_dir, "--vqvae", str(other), "-n", "2",
                 "--out", str(tmp_path / "t.png")]) == 0


@pytest.mark.slow
def test_sample_rejects_a_vqvae_whose_codes_the_prior_never_saw(tmp_path, image_folder, capsys):
    out = tmp_path / "run"
    run_recipe(load_recipe(write_recipe(tmp_path, image_folder, **CODES)), out)
    stranger = latentar.load(out / "vqvae" / "model")
    with torch.no_grad():
        stranger.decoder[0].weight.add_(1.0)
    stranger.save(tmp_path / "stranger")
    code = main(["sample", "--prior", str(out / "prior"), "--vqvae", str(tmp_path / "stranger"), "-n", "2",
                 "--out", str(tmp_path / "s.png")])
    assert code == 2 and "learned the codes of VQ-VAE" in capsys.readouterr().err


@pytest.mark.slow
def test_hierarchical_recipe_trains_a_top_and_a_bottom_prior(tmp_path, image_folder):
    out = tmp_path / "run"
    summary = run_recipe(load_recipe(write_recipe(tmp_path, image_folder, **HIERARCHICAL), ["vqvae.hierarchical=true"]),
                         out)
    top, bottom = latentar.load(out / "prior" / "model"), latentar.load(out / "bottom_prior" / "model")
    assert top.spec.shape == (1, 2, 2) and bottom.spec.shape == (1, 4, 4)
    assert bottom.spec.context_shape == (2, 2)
    assert {"bits_per_code", "wall_time_s"} <= set(summary["bottom_prior"])
    assert (out / "samples.png").is_file()


@pytest.mark.slow
def test_pixel_mode_runs_the_prior_stage_only(tmp_path, image_folder):
    out = tmp_path / "run"
    summary = run_recipe(load_recipe(write_recipe(tmp_path, image_folder, **PIXELS)), out)
    assert summary["mode"] == "pixels" and "vqvae" not in summary and "codes" not in summary
    assert {"bits_per_dim", "nats_per_image", "wall_time_s"} <= set(summary["prior"])
    assert sorted(p.name for p in out.iterdir()) == ["curves.png", "prior", "recipe.json", "samples.png",
                                                     "summary.json"]


@pytest.mark.slow
def test_an_interrupted_stage_resumes_where_it_stopped(tmp_path, image_folder, monkeypatch):
    recipe = load_recipe(write_recipe(tmp_path, image_folder, **PIXELS))
    run_recipe(recipe, tmp_path / "whole")

    save = trainer_module.Trainer.save_checkpoint

    def save_then_crash(self):
        path = save(self)
        raise KeyboardInterrupt(f"power cut after {path.name}")

    monkeypatch.setattr(trainer_module.Trainer, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt, match="power cut after step_00000002"):
        run_recipe(recipe, tmp_path / "cut")
    monkeypatch.undo()
    assert not (tmp_path / "cut" / "prior" / "done.json").exists()
    summary = run_recipe(recipe, tmp_path / "cut")
    assert summary["prior"]["steps"] == 4 and not summary["prior"]["reused"]
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut/prior/metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # no step logged twice, none lost
    whole = latentar.load(tmp_path / "whole/prior/model").state_dict()
    resumed = latentar.load(tmp_path / "cut/prior/model").state_dict()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)  # the same run as without the cut


@pytest.mark.slow
def test_two_processes_write_once_and_summarise_like_one(tmp_path, image_folder, free_port):
    recipe = write_recipe(tmp_path, image_folder, **CODES)
    one = run_recipe(load_recipe(recipe), tmp_path / "one")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # on a machine without CUDA, `--multi_gpu` starts 2 processes that form a gloo group
    # (`--cpu` alone starts one process unless MPI is installed)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--main_process_port", str(free_port), "--mixed_precision", "no",
               "--dynamo_backend", "no", "-m", "latentar", "run", str(recipe), "--out", str(tmp_path / "two")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["num_processes"] == 2 and key_tree(two) == key_tree(one)
    assert done.stdout.count('"num_processes": 2') == 1  # one process reports
    for stage in ("vqvae", "prior"):
        steps = [json.loads(line)["step"]
                 for line in (tmp_path / "two" / stage / "metrics.jsonl").read_text().splitlines()]
        assert steps == sorted(set(steps)), f"{stage}: lines written by more than one process"

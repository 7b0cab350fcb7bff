"""`latentar eval` and `latentar encode` under ``accelerate launch`` with two CPU processes (a gloo
group): each process takes every other item, and the result is that of one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from prior_cases import tiny_prior

import latentar
from latentar import cli

IMAGES = ("--data", "image_folder", "--data-option", "size=8", "--data-root")  # then the image_folder fixture


def launch(port: int, *argv) -> str:
    """``accelerate launch`` of two processes running ``latentar ARGV`` on the CPU -> their stdout."""
    # on a machine without CUDA, `--multi_gpu` starts 2 processes that form a gloo group
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--main_process_port", str(port), "--mixed_precision", "no",
               "--dynamo_backend", "no", "-m", "latentar", "--quiet", *map(str, argv), "--device", "cpu"]
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_two_processes_score_like_one(capsys, tmp_path, image_folder, free_port):
    tiny_prior("pixelcnn", (3, 8, 8), 256, hidden=4).save(tmp_path / "prior")
    argv = ("eval", "--model", tmp_path / "prior", *IMAGES, image_folder, "--batch-size", 3)
    assert cli.main([*map(str, argv), "--device", "cpu"]) == 0
    one = json.loads(capsys.readouterr().out)
    printed = launch(free_port, *argv)
    two = json.loads(printed)  # one JSON document: only the main process prints
    assert one["num_processes"] == 1 and two["num_processes"] == 2
    assert two["count"] == one["count"] == 8 and two["dims"] == one["dims"]
    assert two["nats"] == pytest.approx(one["nats"], rel=1e-9)
    assert two["bits_per_dim"] == pytest.approx(one["bits_per_dim"], rel=1e-9)


@pytest.mark.slow
def test_two_processes_encode_the_files_of_one(capsys, tmp_path, image_folder, free_port):
    latentar.VQVAE((3, 8, 8), latentar.VQVAE.make_config("tiny")).save(tmp_path / "vqvae")
    argv = ("encode", "--vqvae", tmp_path / "vqvae", *IMAGES, image_folder, "--batch-size", 3)
    assert cli.main([*map(str, argv), "--out", str(tmp_path / "one"), "--device", "cpu"]) == 0
    one = json.loads(capsys.readouterr().out)
    two = json.loads(launch(free_port, *argv, "--out", tmp_path / "two"))
    assert two["counts"] == one["counts"] == {"train": 32, "test": 8}
    for name in ("train_codes.npy", "train_labels.npy", "test_codes.npy", "test_labels.npy"):
        assert np.array_equal(np.load(tmp_path / "one" / name), np.load(tmp_path / "two" / name)), name
    manifests = [json.loads((tmp_path / run / "manifest.json").read_text()) for run in ("one", "two")]
    assert manifests[0] == manifests[1]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())

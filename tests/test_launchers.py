"""`latentar train-prior` under the launchers users start it with, two CPU processes each:
torchrun and `accelerate launch` form one gloo group (not two runs fighting over one folder),
and the group trains what one process trains with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import latentar
from latentar import cli

LAUNCHERS = {
    # --standalone: a rendezvous on a port the OS picks (no fixed default port to collide on)
    "torchrun": lambda port: ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    "accelerate launch": lambda port: ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                                       "--num_machines", "1", "--main_process_port", str(port),
                                       "--mixed_precision", "no", "--dynamo_backend", "no"],
}


def train_prior_arguments(image_folder, out, batch_size: int) -> list[str]:
    return ["train-prior", "--data", "image_folder", "--data-root", str(image_folder), "--prior", "pixelcnn",
            "--preset", "tiny", "--arch", "hidden=4", "--steps", "3", "--lr", "0.01", "--batch-size",
            str(batch_size), "--log-every", "1", "--out", str(out)]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_two_cpu_processes_train_like_one(tmp_path, image_folder, free_port, launcher, capsys, device):
    code = cli.main(train_prior_arguments(image_folder, tmp_path / "one", batch_size=8))
    assert code == 0, capsys.readouterr().err
    # no CUDA for the launched processes: the machine of a CPU-only user
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("ACCELERATE_USE_CPU", None)  # torchrun does not set it; `accelerate launch` sets it to False
    command = [sys.executable, *LAUNCHERS[launcher](free_port), "-m", "latentar",
               *train_prior_arguments(image_folder, tmp_path / "two", batch_size=4)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"bits_per_dim"') == 1  # one process reports
    steps = [json.loads(line)["step"] for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # one writer
    one, two = (latentar.load(tmp_path / run / "model").state_dict() for run in ("one", "two"))
    for key in one:  # 2 processes × 4 items = 1 process × 8 items: the same updates
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5)

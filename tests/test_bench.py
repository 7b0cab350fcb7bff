"""``latentar bench``: the JSON it prints is complete and sane (no timing is asserted)."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from prior_cases import tiny_prior

import latentar
from latentar import bench
from latentar.bench import bench_sample, bench_train, has_fast_sampler, op_shares
from latentar.cli import main

NAMES = latentar.list_priors()
COMMON = {"prior", "arch", "shape", "num_symbols", "symbols", "head", "parameters", "device", "torch",
          "threads", "omp_num_threads", "load_average_1min", "batch", "preset"}
SIDE = {"mixed_precision", "compile", "checkpoint_activations", "channels_last", "seconds_per_step",
        "cpu_seconds_per_step", "images_per_second", "flops_per_step", "tflops_per_second", "loss_nats_per_dim",
        "peak_memory_mb", "peak_memory_kind"}  # what bench train reports of one setting


def run_cli(argv, capsys) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


class FakeClock:
    """Stands in for ``time.perf_counter`` / ``process_time``: time moves only when told."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def advance(self, wall: float, cpu: float) -> None:
        self.wall += wall
        self.cpu += cpu

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(bench.time, "perf_counter", lambda: self.wall)
        monkeypatch.setattr(bench.time, "process_time", lambda: self.cpu)


def test_bench_train_cli(capsys, monkeypatch):
    clock = FakeClock()
    clock.install(monkeypatch)
    prior = latentar.build_prior("pixelcnn", (1, 6, 6), 2, preset="tiny")
    # every loss takes 0.25 s on the clock and 0.75 s of CPU (3 threads busy)
    loss = latentar.Prior.loss
    monkeypatch.setattr(latentar.Prior, "loss",
                        lambda self, *a: (clock.advance(0.25, 0.75), loss(self, *a))[1])
    monkeypatch.setattr(bench.os, "getloadavg", lambda: (2.5, 1.0, 0.5))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = run_cli(["bench", "train", "--prior", "pixelcnn", "--preset", "tiny", "--shape", "1,6,6",
                       "--batch", "4", "--steps", "2", "--warmup", "1", "--device", "cpu"], capsys)
    finally:
        torch.set_num_threads(threads)
    assert set(out) == COMMON | {"bench", "steps", "warmup"} | SIDE
    assert out["parameters"] == sum(p.numel() for p in prior.parameters())
    assert out["shape"] == [1, 6, 6] and out["num_symbols"] == 2 and out["device"] == "cpu"
    assert out["arch"] == dict(vars(prior.arch)) and out["load_average_1min"] == 2.5
    assert out["threads"] == 1 and out["omp_num_threads"] == "3" and out["torch"] == torch.__version__
    # one forward pass per step: 0.25 s wall and 0.75 s CPU per step; 4 images / 0.25 s
    assert out["seconds_per_step"] == 0.25 and out["cpu_seconds_per_step"] == 0.75
    assert out["images_per_second"] == 16.0
    assert out["mixed_precision"] == "no" and out["compile"] is False and out["checkpoint_activations"] is False
    assert out["flops_per_step"] > 0 and out["tflops_per_second"] == out["flops_per_step"] / 0.25 / 1e12
    assert out["peak_memory_kind"] == "process_max_rss" and out["peak_memory_mb"] > 0
    assert 0 < out["loss_nats_per_dim"] < 2 * torch.log(torch.tensor(2.0)).item()


def test_bench_train_compare_interleaves_both_sides(capsys, monkeypatch):
    """The fast side (bf16 here) and the eager float32 baseline alternate, each its own copy."""
    clock = FakeClock()
    clock.install(monkeypatch)
    loss, order = latentar.Prior.loss, []

    def timed_loss(self, *a):
        fast = torch.is_autocast_enabled("cpu")
        order.append("fast" if fast else "baseline")
        clock.advance(*((0.1, 0.2) if fast else (0.4, 0.4)))  # bf16: 4x by wall, 2x by CPU
        return loss(self, *a)

    monkeypatch.setattr(latentar.Prior, "loss", timed_loss)
    out = run_cli(["bench", "train", "--prior", "pixelcnn", "--preset", "tiny", "--shape", "1,5,5",
                   "--arch", "hidden=4", "num_blocks=1", "--batch", "3", "--steps", "3", "--warmup", "1",
                   "--compare", "--mixed-precision", "bf16"], capsys)
    assert set(out) == COMMON | {"bench", "steps", "warmup", "baseline", "fast", "speedup", "cpu_speedup"}
    assert out["bench"] == "train_compare" and out["arch"]["hidden"] == 4 and out["arch"]["num_blocks"] == 1
    assert set(out["baseline"]) == set(out["fast"]) == SIDE
    assert out["baseline"]["mixed_precision"] == "no" and out["fast"]["mixed_precision"] == "bf16"
    assert out["baseline"]["seconds_per_step"] == pytest.approx(0.4)
    assert out["fast"]["seconds_per_step"] == pytest.approx(0.1)
    assert out["speedup"] == pytest.approx(4.0) and out["cpu_speedup"] == pytest.approx(2.0)
    # warm-up (fast first), then the timed steps in turn, then one eager step counting flops
    assert order == ["fast", "baseline"] + ["fast", "baseline"] * 3 + ["baseline"]
    assert out["baseline"]["flops_per_step"] == out["fast"]["flops_per_step"] > 0


@pytest.mark.parametrize("name", NAMES)
def test_bench_train_every_prior_with_classes_and_bf16(name):
    prior = tiny_prior(name, (1, 4, 4), 4, num_classes=3).eval()
    out = bench_train(prior, batch=3, steps=1, warmup=0, mixed_precision="bf16")
    assert out["mixed_precision"] == "bf16" and out["images_per_second"] > 0
    assert torch.isfinite(torch.tensor(out["loss_nats_per_dim"]))
    assert not prior.training, "the bench restores the prior's mode"


@pytest.mark.parametrize("name", NAMES)
def test_bench_sample_every_prior(name, monkeypatch):
    prior = tiny_prior(name, (1, 3, 4), 4)
    clock = FakeClock()
    clock.install(monkeypatch)
    naive, fast = prior.naive_sample, prior.sample
    # the naive sampler takes 6 s (9 s CPU) for the batch, the fast one 2 s (1.5 s CPU)
    monkeypatch.setattr(prior, "naive_sample", lambda *a, **k: (clock.advance(6.0, 9.0), naive(*a, **k))[1])
    monkeypatch.setattr(prior, "sample", lambda *a, **k: (clock.advance(2.0, 1.5), fast(*a, **k))[1])
    out = bench_sample(prior, batch=2)
    assert out["has_fast_sampler"] == has_fast_sampler(prior) is True
    assert out["naive_seconds_per_image"] == 3.0 and out["fast_seconds_per_image"] == 1.0
    assert out["naive_cpu_seconds_per_image"] == 4.5 and out["fast_cpu_seconds_per_image"] == 0.75
    assert out["speedup"] == 3.0 and out["cpu_speedup"] == 6.0
    assert out["extrapolated_from_rows"] is None and out["naive_method"].startswith("measured")


def test_bench_sample_extrapolates_from_rows(capsys, monkeypatch):
    """rows=2 on a channel-masked 3×4×5 grid times 2·5·3 full forward passes, scaled by 4/2."""
    prior = tiny_prior("pixelcnn", (3, 4, 5), 8)
    calls = []
    handle = prior.register_forward_hook(lambda *_: calls.append(1))
    with monkeypatch.context() as m:
        m.setattr(bench.time, "perf_counter", itertools.count().__next__)  # every timing: 1 s wall
        m.setattr(bench.time, "process_time", itertools.count(0, 3).__next__)  # and 3 s CPU
        seconds = bench.naive_seconds_from_rows(prior, 2, 2, None, torch.Generator().manual_seed(0))
    handle.remove()
    assert len(calls) == 2 * 5 * 3 and seconds == (2.0, 6.0)
    out = bench_sample(prior, batch=2, rows=2)
    assert out["extrapolated_from_rows"] == 2 and out["naive_method"].startswith("extrapolated")
    cli = run_cli(["bench", "sample", "--prior", "pixelcnn", "--preset", "tiny", "--shape", "1,6,6",
                   "--symbols", "16", "--codes", "--batch", "2", "--rows", "1"], capsys)
    assert set(cli) == COMMON | {"bench", "naive_seconds_per_image", "fast_seconds_per_image", "speedup",
                                 "naive_cpu_seconds_per_image", "fast_cpu_seconds_per_image",
                                 "cpu_speedup", "has_fast_sampler", "naive_method", "fast_method",
                                 "extrapolated_from_rows"}
    assert cli["symbols"] == "codes" and cli["extrapolated_from_rows"] == 1


def test_bench_bad_input_names_the_problem(capsys):
    assert main(["bench", "sample", "--prior", "pixelcnn", "--preset", "tiny", "--shape", "1,4,4",
                 "--rows", "5"]) == 2
    assert "rows must lie in [1, 4]" in capsys.readouterr().err
    assert main(["bench", "train", "--prior", "pixelcnm"]) == 2
    assert "unknown prior 'pixelcnm'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "train", "--prior", "pixelcnn", "--shape", "1,28"])
    assert "shape must be C,H,W" in capsys.readouterr().err
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        bench_train(tiny_prior("pixelcnn", (1, 3, 3), 2), mixed_precision="fp8")
    with pytest.raises(ValueError, match="prior 'pixelcnn' does not support checkpoint_activations"):
        bench_train(tiny_prior("pixelcnn", (1, 3, 3), 2), checkpoint_activations=True)
    assert main(["bench", "train", "--prior", "pixelcnn", "--preset", "tiny", "--arch", "widht=3"]) == 2
    assert "unknown argument(s) ['widht']" in capsys.readouterr().err


def test_profile_finds_the_attention_kernels_of_a_transformer_and_none_in_a_pixelcnn():
    transformer = bench_train(tiny_prior("transformer", (1, 4, 4), 4), batch=2, steps=1, warmup=0, profile=True)
    shares = transformer["profile"]
    assert 0 < shares["attention_share"] < 1
    assert sum(shares["top_ops"].values()) <= 1 + 1e-9
    pixelcnn = bench_train(tiny_prior("pixelcnn", (1, 4, 4), 4), batch=2, steps=1, warmup=0, profile=True)
    assert pixelcnn["profile"]["attention_share"] == 0
    assert "profile" not in bench_train(tiny_prior("pixelcnn", (1, 4, 4), 4), batch=2, steps=1, warmup=0)


def test_op_shares_of_a_step_of_matmuls_name_the_matmul():
    a = torch.randn(64, 64)
    shares = op_shares(lambda: [a @ a for _ in range(20)], torch.device("cpu"))
    assert max(shares["top_ops"], key=shares["top_ops"].__getitem__) == "aten::mm"
    assert shares["attention_share"] == 0

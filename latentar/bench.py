"""Speed and memory of priors, measured on random symbol grids and printed as JSON.

Every time is reported twice: wall seconds, and CPU seconds of this process (all
threads; on a CPU shared with other jobs the steadier number, on a GPU host time only).

``bench_train``: seconds per step and images/s of forward + backward + Adam step.
``bench_sample``: seconds per image of the naive sampler (one full forward pass per
symbol draw) and of ``prior.sample`` (the prior's fast sampler where it has one), and
the speedup. Naive sampling of large grids is slow on a CPU, so it can be
extrapolated: every naive step is one teacher-forced forward pass of the whole grid,
whatever the step, so timing ``rows · W · S`` passes (S = C draws per position for
channel-masked backbones, else 1) and scaling to ``H · W · S`` steps measures it
without running it all. The per-step head draws (a softmax over one position) are
left out of that estimate; the output says which method was used.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import asdict
from typing import Callable, NamedTuple

import torch

from latentar.nn.modes import eval_mode
from latentar.priors.base import Prior, make_cond

MIXED_PRECISION = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}


# ---- random inputs (shared with receptive_field) --------------------------------------
def random_cond(prior: Prior, n: int, generator: torch.Generator) -> dict | None:
    """Random labels / spatial context for n grids where the prior needs them (else None)."""
    spec, labels, context = prior.spec, None, None
    if spec.num_classes is not None:
        labels = torch.randint(0, spec.num_classes, (n,), generator=generator)  # (n,)
    if spec.context_shape is not None:
        context = torch.randint(0, spec.context_symbols, (n, *spec.context_shape), generator=generator)  # (n, h, w)
    return make_cond(labels, context, device=prior.device)


# ---- measurements ----------------------------------------------------------------------
class Timing(NamedTuple):
    wall: float  # seconds on the clock
    cpu: float  # seconds of this process's CPU time, all threads: steadier on a shared CPU

    def scale(self, factor: float) -> "Timing":
        return Timing(self.wall * factor, self.cpu * factor)


def timed(fn: Callable[[], object], device: torch.device, times: int = 1) -> Timing:
    """Seconds of calling ``fn()`` ``times`` times (results dropped at once), waiting for
    queued GPU work before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(times):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return Timing(time.perf_counter() - wall, time.process_time() - cpu)


def peak_memory(device: torch.device) -> dict:
    """CUDA: max_memory_allocated since the last reset. CPU: the process's max RSS so far."""
    if device.type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20,
                "peak_memory_kind": "cuda_max_memory_allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"peak_memory_mb": rss / (2**20 if sys.platform == "darwin" else 2**10),
            "peak_memory_kind": "process_max_rss"}


def environment(prior: Prior) -> dict:
    C, H, W = prior.spec.shape
    return {"prior": prior.name, "arch": asdict(prior.arch), "shape": [C, H, W],
            "num_symbols": prior.spec.num_symbols, "symbols": prior.spec.symbols, "head": prior.spec.head,
            "parameters": sum(p.numel() for p in prior.parameters()),
            "device": str(prior.device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_average_1min": os.getloadavg()[0]}  # a busy machine slows every timing


def bench_train(prior: Prior, *, batch: int = 32, steps: int = 10, warmup: int = 2,
                mixed_precision: str = "no", seed: int = 0) -> dict:
    """Time ``steps`` forward + backward + Adam steps on one random batch (after ``warmup``)."""
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision must be one of {sorted(MIXED_PRECISION)}, got {mixed_precision!r}")
    if batch < 1 or steps < 1 or warmup < 0:
        raise ValueError(f"need batch >= 1, steps >= 1, warmup >= 0; got {batch}, {steps}, {warmup}")
    device, dtype = prior.device, MIXED_PRECISION[mixed_precision]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, prior.spec.num_symbols, (batch, *prior.spec.shape), generator=gen).to(device)
    cond = random_cond(prior, batch, gen)
    opt = torch.optim.Adam(prior.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=mixed_precision == "fp16")
    losses = []

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = prior.loss(x, cond)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.detach())

    was_training = prior.training
    prior.train()
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = timed(step, device, times=steps)
    prior.train(was_training)
    return {"bench": "train", **environment(prior), "batch": batch, "steps": steps, "warmup": warmup,
            "mixed_precision": mixed_precision, "seconds_per_step": seconds.wall / steps,
            "cpu_seconds_per_step": seconds.cpu / steps, "images_per_second": batch * steps / seconds.wall,
            "loss_nats_per_dim": float(losses[-1]), **peak_memory(device)}


def has_fast_sampler(prior: Prior) -> bool:
    """Whether the prior samples faster than the naive sampler: its class brings a stepper of
    its own instead of ``Prior.Stepper`` (the naive one)."""
    return type(prior).Stepper is not Prior.Stepper


@torch.no_grad()
def naive_seconds_from_rows(prior: Prior, batch: int, rows: int, cond, generator) -> Timing:
    """Extrapolated seconds of ``naive_sample(batch)``: rows · W · S forward passes, scaled."""
    C, H, W = prior.spec.shape
    draws = C if prior.channel_masked else 1  # forward passes per position
    x = torch.randint(0, prior.spec.num_symbols, (batch, C, H, W), generator=generator).to(prior.device)
    passes = rows * W * draws
    return timed(lambda: prior(x, cond), prior.device, times=passes).scale(H * W * draws / passes)


def bench_sample(prior: Prior, *, batch: int = 16, rows: int | None = None, seed: int = 0) -> dict:
    """Seconds per image of naive and fast sampling of ``batch`` grids, and the speedup.

    ``rows`` given: the naive time is extrapolated from that many rows' forward passes
    (see the module docstring); the fast sampler always runs on the full grid.
    """
    _, H, _ = prior.spec.shape
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if rows is not None and not 1 <= rows <= H:
        raise ValueError(f"rows must lie in [1, {H}] for a grid of height {H}, got {rows}")
    gen = torch.Generator().manual_seed(seed)
    cond = random_cond(prior, batch, gen)
    draw_gen = torch.Generator(prior.device).manual_seed(seed)
    with eval_mode(prior), torch.no_grad():
        prior(torch.zeros(batch, *prior.spec.shape, dtype=torch.long, device=prior.device), cond)  # warm-up
        if rows is None:
            naive = timed(lambda: prior.naive_sample(batch, cond, generator=draw_gen), prior.device)
            naive_method = "measured: naive_sample on the full grid"
        else:
            naive = naive_seconds_from_rows(prior, batch, rows, cond, gen)
            naive_method = (f"extrapolated: one full-grid forward pass per draw, timed over {rows} "
                            f"row(s) and scaled to {H}; per-step head draws not included")
        fast_sampler = has_fast_sampler(prior)
        if fast_sampler:
            fast = timed(lambda: prior.sample(batch, cond, generator=draw_gen), prior.device)
            fast_method = "measured: prior.sample on the full grid"
        else:
            fast, fast_method = naive, "none: prior.sample is the naive sampler"
    return {"bench": "sample", **environment(prior), "batch": batch, "has_fast_sampler": fast_sampler,
            "naive_seconds_per_image": naive.wall / batch, "fast_seconds_per_image": fast.wall / batch,
            "speedup": naive.wall / fast.wall, "naive_cpu_seconds_per_image": naive.cpu / batch,
            "fast_cpu_seconds_per_image": fast.cpu / batch, "cpu_speedup": naive.cpu / fast.cpu,
            "naive_method": naive_method, "fast_method": fast_method, "extrapolated_from_rows": rows}


__all__ = ["bench_train", "bench_sample", "has_fast_sampler", "random_cond"]

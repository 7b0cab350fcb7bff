"""Speed and memory of priors, measured on random symbol grids and printed as JSON.

Every time is reported twice: wall seconds, and CPU seconds of this process (all
threads; on a CPU shared with other jobs the steadier number, on a GPU host time only).

``bench_train``: seconds per step (the median), images/s and achieved TFLOP/s of
forward + backward + Adam step, under chosen speed settings (``SpeedSettings``: autocast,
``torch.compile``, activation checkpointing, channels-last memory format). ``bench_train_compare``: the baseline (eager
float32) and chosen settings interleaved step by step in one process, and their ratio.
``profile=True`` adds one more step under ``torch.profiler``: each op's share of the step's
self time (device time on a GPU), the largest ops, and the attention kernels' share.
``bench_sample``: seconds per image of the naive sampler (one full forward pass per
symbol draw) and of ``prior.sample`` (the prior's fast stepper), and
the speedup. Naive sampling of large grids is slow on a CPU, so it can be
extrapolated: every naive step is one teacher-forced forward pass of the whole grid,
whatever the step, so timing ``rows · W · S`` passes (S = C draws per position for
channel-masked backbones, else 1) and scaling to ``H · W · S`` steps measures it
without running it all. The per-step head draws (a softmax over one position) are
left out of that estimate; the output says which method was used.

Before any work, each bench checks that its batch fits the memory cap (``latentar.memory``;
``--max-memory``) in one piece and refuses one that does not with a ``MemoryCapError``: a
bench measures the batch it was given, so it never splits it.
"""

from __future__ import annotations

import copy
import os
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, NamedTuple

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from latentar.memory import check_fits
from latentar.nn.modes import eval_mode
from latentar.priors.base import Prior
from latentar.priors.condition import Condition, as_condition
from latentar.priors.footprint import forward_bytes, grid_bytes, training_bytes

MIXED_PRECISION = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}
ATTENTION_KERNELS = ("scaled_dot_product", "flash_attention", "efficient_attention", "cudnn_attention",
                     "flex_attention")  # substrings of the fused attention ops' names, forward and backward


# ---- random inputs (shared with receptive_field) --------------------------------------
def random_cond(prior: Prior, n: int, generator: torch.Generator) -> Condition:
    """Random labels / spatial context for n grids where the prior needs them, on its device."""
    spec, labels, context = prior.spec, None, None
    if spec.num_classes is not None:
        labels = torch.randint(0, spec.num_classes, (n,), generator=generator)  # (n,)
    if spec.context_shape is not None:
        assert spec.context_symbols is not None  # given together (PriorSpec)
        context = torch.randint(0, spec.context_symbols, (n, *spec.context_shape), generator=generator)  # (n, h, w)
    return as_condition(Condition(labels, context), device=prior.device)


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


@dataclass(frozen=True)
class SpeedSettings:
    """How a training step runs: autocast dtype, ``torch.compile``, activation checkpointing,
    memory format."""

    mixed_precision: str = "no"  # "no" | "fp16" | "bf16"
    compile: bool = False  # Prior.set_compile: the loss of checked inputs through torch.compile
    checkpoint_activations: bool = False  # Prior.set_activation_checkpointing
    channels_last: bool = False  # Prior.set_channels_last: 4-D weights and feature maps channels last

    def __post_init__(self):
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {sorted(MIXED_PRECISION)}, "
                             f"got {self.mixed_precision!r}")


class TrainStep:
    """One forward + backward + Adam step of ``prior`` on a fixed batch, under ``settings``
    (applied to the prior here); ``losses`` keeps each step's loss on the device."""

    def __init__(self, prior: Prior, x: torch.Tensor, cond, settings: SpeedSettings):
        self.prior, self.x, self.cond, self.settings = prior, x, cond, settings
        self.device = prior.device
        self.dtype = MIXED_PRECISION[settings.mixed_precision]
        prior.set_compile(settings.compile)
        prior.set_activation_checkpointing(settings.checkpoint_activations)
        prior.set_channels_last(settings.channels_last)
        self.opt = torch.optim.Adam(prior.parameters(), lr=1e-4)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=settings.mixed_precision == "fp16")
        self.losses: list[torch.Tensor] = []

    def __call__(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            loss = self.prior.loss(self.x, self.cond)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.losses.append(loss.detach())

    def flops(self) -> int:
        """Floating-point operations of one step (convs and matmuls, forward and backward),
        counted by ``FlopCounterMode`` on one extra eager step."""
        compiled = self.prior.compiled
        self.prior.set_compile(False)  # the counter sees eager ops only
        with FlopCounterMode(display=False) as counter:
            self()
        self.prior.set_compile(compiled)
        return counter.get_total_flops()

    def summary(self, times: list[Timing], flops: int) -> dict:
        """Median seconds per step (wall and CPU) of ``times``, images/s and achieved TFLOP/s."""
        wall = statistics.median(t.wall for t in times)
        cpu = statistics.median(t.cpu for t in times)
        return {**asdict(self.settings), "seconds_per_step": wall, "cpu_seconds_per_step": cpu,
                "images_per_second": self.x.shape[0] / wall, "flops_per_step": flops,
                "tflops_per_second": flops / wall / 1e12, "loss_nats_per_dim": float(self.losses[-1])}


def op_shares(step: Callable[[], object], device: torch.device, top: int = 8) -> dict:
    """One call of ``step`` under ``torch.profiler``: each op's share of the summed self time
    (device time on a GPU, else CPU time), the ``top`` largest, and ``attention_share``: that
    of the fused attention kernels (``ATTENTION_KERNELS``; a math fallback would be counted
    under its matmuls and softmax instead, so the top ops are printed too)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    own = {e.key: e.self_device_time_total if device.type == "cuda" else e.self_cpu_time_total
           for e in prof.key_averages()}
    total = sum(own.values()) or 1
    largest = sorted(own, key=own.__getitem__, reverse=True)[:top]
    attention = sum(t for name, t in own.items() if any(k in name for k in ATTENTION_KERNELS))
    return {"attention_share": attention / total, "top_ops": {name: own[name] / total for name in largest},
            "profiled_time": "device" if device.type == "cuda" else "cpu"}


def random_batch(prior: Prior, batch: int, seed: int) -> tuple[torch.Tensor, Condition]:
    """Random symbols long (batch, C, H, W) and a random cond, on the prior's device."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, prior.spec.num_symbols, (batch, *prior.spec.shape), generator=gen).to(prior.device)
    return x, random_cond(prior, batch, gen)


def check_counts(batch: int, steps: int, warmup: int) -> None:
    if batch < 1 or steps < 1 or warmup < 0:
        raise ValueError(f"need batch >= 1, steps >= 1, warmup >= 0; got {batch}, {steps}, {warmup}")


def check_train_memory(prior: Prior, batch: int, copies: int = 1) -> None:
    """Refuse (``MemoryCapError``) a training step of ``batch`` grids on ``copies`` copies of the
    prior that cannot fit the memory cap (``priors.footprint.training_bytes``), before any work."""
    estimate, made_of = training_bytes(prior, batch)
    check_fits(copies * estimate, f"bench train of batch={batch} grids {tuple(prior.spec.shape)}", prior.device,
               made_of if copies == 1 else f"{copies} copies of {made_of}")


def bench_train(prior: Prior, *, batch: int = 32, steps: int = 10, warmup: int = 2,
                mixed_precision: str = "no", compile: bool = False, checkpoint_activations: bool = False,
                channels_last: bool = False, seed: int = 0, profile: bool = False) -> dict:
    """Time ``steps`` forward + backward + Adam steps on one random batch (after ``warmup``);
    median seconds per step, peak memory of the process (CPU: max RSS) or of the device;
    with ``profile``, the ops' shares of one more step (``op_shares``)."""
    settings = SpeedSettings(mixed_precision, compile, checkpoint_activations, channels_last)
    check_counts(batch, steps, warmup)
    check_train_memory(prior, batch)
    x, cond = random_batch(prior, batch, seed)
    was = prior.training, prior.compiled, prior.checkpoint_activations, prior.channels_last
    prior.train()
    step = TrainStep(prior, x, cond, settings)
    for _ in range(warmup):
        step()
    if step.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(step.device)
    times = [timed(step, step.device) for _ in range(steps)]
    memory = peak_memory(step.device)  # before the flop count's extra step
    flops = step.flops()
    shares = {"profile": op_shares(step, step.device)} if profile else {}
    restore(prior, *was)
    return {"bench": "train", **environment(prior), "batch": batch, "steps": steps, "warmup": warmup,
            **step.summary(times, flops), **memory, **shares}


def bench_train_compare(prior: Prior, *, batch: int = 32, steps: int = 10, warmup: int = 2,
                        mixed_precision: str = "no", compile: bool = False, checkpoint_activations: bool = False,
                        channels_last: bool = False, seed: int = 0) -> dict:
    """The baseline (eager float32) and ``fast`` settings on two copies of ``prior`` (same
    weights, each its own Adam), timed step by step in turn on the same batch, so that the
    load of a shared machine hits both alike; ``speedup`` and ``cpu_speedup`` are ratios of
    the median seconds per step, baseline over fast.

    Peak memory: on a GPU each side's ``max_memory_allocated`` over its steps (the peak
    counter is reset before each). A CPU has no per-side counter in one process: the fast
    side warms up first, and each side reports the process's max RSS after its warm-up, so the
    fast number is its own peak (plus the baseline's weights) and the baseline's is the larger
    of the two; ``bench train`` without ``--compare`` in a fresh process measures one alone.
    """
    fast_settings = SpeedSettings(mixed_precision, compile, checkpoint_activations, channels_last)
    check_counts(batch, steps, warmup)
    check_train_memory(prior, batch, copies=2)
    x, cond = random_batch(prior, batch, seed)
    sides = {"fast": TrainStep(copy.deepcopy(prior).train(), x, cond, fast_settings),
             "baseline": TrainStep(copy.deepcopy(prior).train(), x, cond, SpeedSettings())}
    device, memory = prior.device, {}
    for name, step in sides.items():  # fast first: see the docstring
        for _ in range(max(warmup, 1)):
            step()
        memory[name] = peak_memory(device)
    times: dict[str, list[Timing]] = {name: [] for name in sides}
    for _ in range(steps):
        for name, step in sides.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times[name].append(timed(step, device))
            if device.type == "cuda":
                memory[name] = max(memory[name], peak_memory(device), key=lambda m: m["peak_memory_mb"])
    flops = sides["baseline"].flops()
    out = {name: {**step.summary(times[name], flops), **memory[name]} for name, step in sides.items()}
    return {"bench": "train_compare", **environment(prior), "batch": batch, "steps": steps, "warmup": warmup,
            "baseline": out["baseline"], "fast": out["fast"],
            "speedup": out["baseline"]["seconds_per_step"] / out["fast"]["seconds_per_step"],
            "cpu_speedup": out["baseline"]["cpu_seconds_per_step"] / out["fast"]["cpu_seconds_per_step"]}


def restore(prior: Prior, training: bool, compiled: bool, checkpointing: bool, channels_last: bool) -> None:
    """Put back the prior's mode and speed settings after a bench."""
    prior.train(training)
    prior.set_compile(compiled)
    prior.set_activation_checkpointing(checkpointing)
    prior.set_channels_last(channels_last)


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
    per_grid = forward_bytes(prior) + 3 * grid_bytes(prior.spec)
    check_fits(batch * per_grid, f"bench sample of batch={batch} grids {tuple(prior.spec.shape)}", prior.device,
               "the grids and one forward's activations, in one batch")
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
        fast = timed(lambda: prior.sample(batch, cond, generator=draw_gen), prior.device)
    return {"bench": "sample", **environment(prior), "batch": batch, "has_fast_sampler": has_fast_sampler(prior),
            "naive_seconds_per_image": naive.wall / batch, "fast_seconds_per_image": fast.wall / batch,
            "speedup": naive.wall / fast.wall, "naive_cpu_seconds_per_image": naive.cpu / batch,
            "fast_cpu_seconds_per_image": fast.cpu / batch, "cpu_speedup": naive.cpu / fast.cpu,
            "naive_method": naive_method, "fast_method": "measured: prior.sample on the full grid",
            "extrapolated_from_rows": rows}


__all__ = ["SpeedSettings", "bench_train", "bench_train_compare", "bench_sample", "has_fast_sampler", "random_cond"]

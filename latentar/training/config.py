"""``TrainConfig``: how one stage (VQ-VAE or prior) is trained. Flat, plain types, TOML-friendly."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from latentar.augmentations import check_names

LR_SCHEDULES = ("constant", "exponential", "cosine")
MIXED_PRECISION = ("no", "fp16", "bf16")
OPTIMIZERS = ("adam", "adamw")  # torch.optim.Adam, torch.optim.AdamW (latentar.training.optimizers)
REPORT_TO = ("none", "tensorboard", "wandb", "all")  # trackers (see latentar.training.tracking)
ACCELERATE_PRECISION = "ACCELERATE_MIXED_PRECISION"  # Accelerate's setting, read when mixed_precision is None
MAX_SEED = 2**32 - 1  # accelerate's set_seed seeds numpy too, whose seeds lie in [0, 2**32 - 1]
INT_FIELDS = ("steps", "batch_size", "warmup_steps", "grad_accum", "eval_every", "save_every", "log_every",
              "seed", "num_workers", "max_nonfinite", "sample_every", "keep_checkpoints")
# finite numbers (None where allowed)
FLOAT_FIELDS = ("lr", "lr_decay", "grad_clip", "ema_decay", "weight_decay", "beta1", "beta2", "augment_rate")
BOOL_FIELDS = ("compile", "checkpoint_activations", "channels_last", "augment_conditioning")
NULLABLE = ("mixed_precision",)  # str fields of bounds that may be None


@dataclass
class TrainConfig:
    # the strings a str field takes (as in latentar.checks.Checked); the command line offers them as choices
    bounds = {"lr_schedule": LR_SCHEDULES, "mixed_precision": MIXED_PRECISION, "report_to": REPORT_TO,
              "optimizer": OPTIMIZERS}

    steps: int = 1000  # optimizer updates (not micro-batches, not epochs)
    batch_size: int = 32  # examples per micro-batch on each process
    lr: float = 1e-3  # peak learning rate
    optimizer: str = "adam"  # "adam" (weight_decay adds an L2 penalty to the gradients) | "adamw" (decoupled decay)
    weight_decay: float = 0.0  # the optimizer's weight decay; 0 = none
    beta1: float = 0.9  # the optimizer's first-moment decay (Adam's beta1)
    beta2: float = 0.999  # the optimizer's second-moment decay (Adam's beta2)
    lr_schedule: str = "constant"  # "constant" | "exponential" (lr·lr_decay^step) | "cosine"
    lr_decay: float = 0.999995  # per-step factor of the exponential schedule (PixelCNN++)
    warmup_steps: int = 0  # linear warm-up steps before the schedule starts
    grad_clip: float | None = None  # max global gradient norm; None = no clipping
    grad_accum: int = 1  # micro-batches per optimizer update
    mixed_precision: str | None = None  # "no" | "fp16" | "bf16" autocast; None: Accelerate's setting
    # (accelerate launch --mixed_precision or its config file, ACCELERATE_MIXED_PRECISION), else "no"
    compile: bool = False  # a prior's loss runs through torch.compile (its inputs checked eagerly first)
    checkpoint_activations: bool = False  # recompute big blocks' activations in backward: less memory, more time
    channels_last: bool = False  # a prior's 4-D weights and feature maps in channels-last memory format
    ema_decay: float | None = None  # Polyak/EMA decay of the weights; None = no EMA
    eval_every: int = 0  # evaluate every N updates; 0 = only at the end
    save_every: int = 0  # checkpoint every N updates; 0 = only at the end
    keep_checkpoints: int = 2  # the newest checkpoints kept in the run folder (older ones are removed)
    log_every: int = 50  # append a metrics line every N updates
    seed: int = 0  # seeds the weights, the data order and dropout
    num_workers: int = 0  # DataLoader worker processes
    max_nonfinite: int = 3  # skipped updates (non-finite loss or gradients) in a row that stop the run
    report_to: str = "none"  # trackers: "none" | "tensorboard" | "wandb" | "all" (both)
    tracker_project: str | None = None  # the W&B project and TensorBoard's folder in logs/; None: WANDB_PROJECT
    # if set, else "latentar" (a value given here wins over WANDB_PROJECT; W&B reads WANDB_ENTITY itself)
    tracker_run_name: str | None = None  # the run's name in W&B; None: the run folder's name
    sample_every: int = 0  # write (and track) a sample or reconstruction grid every N updates; 0 = off
    augment: tuple[str, ...] = ()  # prior training: distribution augmentation, the types out of rot90, transpose,
    # flip, channels, jigsaw (comma-separated on the command line) whose product's ids transform the examples
    augment_rate: float = 0.5  # the probability that an example is augmented (by a uniform non-identity id)
    augment_conditioning: bool = True  # the prior is told each example's augmentation id; off: trained on the
    # augmented examples without it (and built without augmentations)

    def __post_init__(self):
        if isinstance(self.augment, str):  # "rot90,transpose"
            self.augment = tuple(name.strip() for name in self.augment.split(",") if name.strip())
        _check(isinstance(self.augment, (list, tuple)), "augment", "a list of augmentation names", self.augment)
        try:
            self.augment = check_names(self.augment)
        except ValueError as e:
            raise ValueError(f"TrainConfig.augment: {e}") from e
        for name in INT_FIELDS:
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool), name, "an integer", value)
        for name in BOOL_FIELDS:
            _check(isinstance(getattr(self, name), bool), name, "true or false", getattr(self, name))
        for name in FLOAT_FIELDS:
            value = getattr(self, name)
            _check(value is None or _is_finite_number(value), name, "a finite number", value)
        _check(self.steps >= 1, "steps", "an integer >= 1", self.steps)
        _check(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)
        _check(self.lr > 0, "lr", "a positive number", self.lr)
        for name, choices in self.bounds.items():
            value = getattr(self, name)
            _check(value in choices or (value is None and name in NULLABLE), name, f"one of {choices}", value)
        for name in ("tracker_project", "tracker_run_name"):
            value = getattr(self, name)
            _check(value is None or (isinstance(value, str) and value.strip() != ""), name,
                   "a non-empty string or None", value)
        _check(self.weight_decay >= 0, "weight_decay", "a number >= 0", self.weight_decay)
        for name in ("beta1", "beta2"):
            _check(0 <= getattr(self, name) < 1, name, "a number in [0, 1)", getattr(self, name))
        _check(0 < self.lr_decay <= 1, "lr_decay", "a number in (0, 1]", self.lr_decay)
        _check(0 <= self.warmup_steps < self.steps, "warmup_steps", f"an integer in [0, steps={self.steps})",
               self.warmup_steps)
        _check(self.grad_clip is None or self.grad_clip > 0, "grad_clip", "a positive number or None",
               self.grad_clip)
        _check(self.grad_accum >= 1, "grad_accum", "an integer >= 1", self.grad_accum)
        _check(self.ema_decay is None or 0 <= self.ema_decay < 1, "ema_decay", "a number in [0, 1) or None",
               self.ema_decay)
        for name in ("eval_every", "save_every", "num_workers", "sample_every"):
            _check(getattr(self, name) >= 0, name, "an integer >= 0", getattr(self, name))
        _check(self.log_every >= 1, "log_every", "an integer >= 1", self.log_every)
        _check(0 <= self.augment_rate <= 1, "augment_rate", "a number in [0, 1]", self.augment_rate)
        _check(self.max_nonfinite >= 1, "max_nonfinite", "an integer >= 1", self.max_nonfinite)
        _check(self.keep_checkpoints >= 1, "keep_checkpoints", "an integer >= 1", self.keep_checkpoints)
        _check(0 <= self.seed <= MAX_SEED, "seed", f"an integer in [0, {MAX_SEED}]", self.seed)

    @property
    def prior_augmentations(self) -> tuple[str, ...]:
        """The augmentation types a prior trained under this config is built with: ``augment`` when
        it is told the ids (``augment_conditioning``), none otherwise."""
        return self.augment if self.augment_conditioning else ()


def precision_in_effect(mixed_precision: str | None) -> str:
    """The precision a run with this setting trains in: the setting, else Accelerate's
    (``ACCELERATE_MIXED_PRECISION``, which ``accelerate launch`` and its config file set), else "no"."""
    return mixed_precision or os.environ.get(ACCELERATE_PRECISION, "no").lower()


def check_mixed_precision(mixed_precision: str | None, device: torch.device | str,
                          in_effect: str | None = None) -> None:
    """Refuse a mixed precision that autocast cannot apply on ``device`` (it would be silently
    ignored): fp16 autocast needs a GPU. ``mixed_precision`` is the setting (None: Accelerate's,
    which ``accelerate launch`` passes on in ``ACCELERATE_MIXED_PRECISION``); ``in_effect`` is the
    one an Accelerator made from it uses (default: the setting, resolved as Accelerate does)."""
    precision = in_effect or precision_in_effect(mixed_precision)
    if precision == "fp16" and torch.device(device).type == "cpu":
        source = "" if mixed_precision is not None else (
            " (Accelerate's setting: accelerate launch --mixed_precision or its config file, or "
            f"{ACCELERATE_PRECISION}; TrainConfig.mixed_precision, --mixed-precision, overrides it)")
        raise ValueError(f"mixed_precision 'fp16'{source} cannot be used on a CPU: autocast cannot use fp16 there, "
                         "and training would silently stay in float32; use 'bf16' (or 'no') on a CPU")


def _is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(ok: bool, name: str, expected: str, got) -> None:
    if not ok:
        raise ValueError(f"TrainConfig.{name} must be {expected}, got {got!r}")

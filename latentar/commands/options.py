"""Options the commands share: the data root, TrainConfig as flags, a prior described by
flags, the sampling knobs, saved-model folders, and the one KEY=VALUE parser (the literal
rule of ``latentar.config.parse_text``, used by ``--set``, ``--arch`` and ``--data-option``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from latentar.checks import SEED, check_value
from latentar.config import parse_text, split_assignment
from latentar.memory import ENV_VAR, parse_size
from latentar.priors.base import Prior, build_prior
from latentar.saving import CONFIG_FILE, load
from latentar.training import TrainConfig
from latentar.training.config import LR_SCHEDULES, MIXED_PRECISION, REPORT_TO
from latentar.training.trainer import MODEL_DIR

# TrainConfig fields the command line sets: (name, type, argparse extras).
TRAIN_OPTIONS = [
    ("steps", int, {}), ("batch_size", int, {}), ("lr", float, {}),
    ("lr_schedule", str, {"choices": LR_SCHEDULES}), ("lr_decay", float, {}),
    ("warmup_steps", int, {}), ("grad_clip", float, {}), ("grad_accum", int, {}),
    ("mixed_precision", str, {"choices": MIXED_PRECISION}), ("ema_decay", float, {}),
    ("compile", bool, {"help": "run a prior's loss through torch.compile (inputs checked eagerly first)"}),
    ("checkpoint_activations", bool, {"help": "recompute big blocks' activations in backward: less memory, "
                                              "more time (pixelcnn_pp, pixelsnail)"}),
    ("channels_last", bool, {"help": "a prior's 4-D weights and feature maps in channels-last memory format "
                                     "(faster convolutions on some CPUs and GPUs)"}),
    ("eval_every", int, {}), ("save_every", int, {}), ("log_every", int, {}), ("seed", int, {}),
    ("num_workers", int, {}), ("max_nonfinite", int, {}),
    ("report_to", str, {"choices": REPORT_TO, "help": "trackers: tensorboard, wandb, all (both) or none"}),
    ("sample_every", int, {"help": "write a sample (VQ-VAE: reconstruction) grid every N updates; 0 = off"}),
]


def add_data_root(parser: argparse.ArgumentParser, help: str = "where datasets live (default: the data root)"):
    parser.add_argument("--data-root", default=None, help=help)


def parse_assignments(items: list[str], flag: str = "--arch") -> dict:
    """["hidden=32", "dropout=0.5", "name=x", "size=none"] -> {"hidden": 32, "dropout": 0.5,
    "name": "x", "size": None}: each value read by the one literal rule (``parse_text``)."""
    return {key: parse_text(text) for key, text in (split_assignment(item, flag) for item in items)}


def add_max_memory(parser: argparse.ArgumentParser) -> None:
    """--max-memory SIZE: the memory cap of this command (``latentar.memory``), applied by ``cli.main``."""
    parser.add_argument("--max-memory", type=max_memory_size, default=None, metavar="SIZE",
                        help=f"refuse work estimated to need more memory than SIZE, e.g. 8GB or 512MiB; larger "
                             f"requests run in batches that fit where they can (default: {ENV_VAR}, else 80%% "
                             f"of the device's memory)")


def max_memory_size(text: str) -> str:
    """The text of --max-memory, checked to be a size (``latentar.memory.parse_size``)."""
    try:
        parse_size(text, "the value")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return text


def seed_value(text: str) -> int:
    """The text of a --seed flag -> an integer in ``SEED``'s range (that of torch.Generator)."""
    try:
        return check_value(int(text), int, "the value", SEED)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the value must be an integer {SEED}, got {text!r}") from None


def check_positive(value: int, flag: str) -> None:
    """A count given on the command line must be >= 1; checked before the work that uses it."""
    if value < 1:
        raise ValueError(f"{flag} must be an integer >= 1, got {value}")


# ---- training a model into a run folder -----------------------------------------------
def add_run_folder_options(parser: argparse.ArgumentParser, default: TrainConfig) -> None:
    """--out --resume --overwrite --subset --data-root --eval-batch-size, and one flag per
    ``TRAIN_OPTIONS`` field with ``default``'s value."""
    parser.add_argument("--subset", type=int, default=None, help="train on the first N training images only")
    add_data_root(parser)
    parser.add_argument("--out", required=True, help="run folder: metrics, checkpoints, model, summary.json")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace the earlier run's outputs in --out")
    parser.add_argument("--eval-batch-size", type=int, default=256)
    for name, kind, extra in TRAIN_OPTIONS:
        flag, value = "--" + name.replace("_", "-"), getattr(default, name)
        if kind is bool:  # a switch
            parser.add_argument(flag, action="store_true", default=value, dest=name, **extra)
        else:
            parser.add_argument(flag, type=kind, default=value, dest=name, **extra)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of the ``TRAIN_OPTIONS`` flags."""
    return TrainConfig(**{name: getattr(args, name) for name, _, _ in TRAIN_OPTIONS})


# ---- a prior described by flags (bench, receptive-field) ------------------------------
def parse_shape(text: str) -> tuple[int, int, int]:
    """'C,H,W' -> (C, H, W) of positive ints."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"shape must be C,H,W with positive integers, got {text!r}")
    return shape


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available")
    return torch.device(name)


def add_prior_arguments(p: argparse.ArgumentParser, *, default_shape: str, default_symbols: int,
                        prior_required: bool = True) -> None:
    """--prior --preset --shape --symbols --codes --head --classes --arch --device."""
    p.add_argument("--prior", required=prior_required, help="registered prior name")
    p.add_argument("--preset", help="architecture preset (default: the architecture's defaults)")
    p.add_argument("--shape", type=parse_shape, default=parse_shape(default_shape),
                   help=f"C,H,W of the symbol grid (default {default_shape})")
    p.add_argument("--symbols", type=int, default=default_symbols,
                   help=f"number of symbols K (default {default_symbols})")
    p.add_argument("--codes", action="store_true", help="model codes (embedded) instead of pixels")
    p.add_argument("--head", default="categorical", help="registered head name")
    p.add_argument("--classes", type=int, help="class-conditional with this many classes")
    p.add_argument("--arch", nargs="*", default=[], metavar="KEY=VALUE",
                   help="architecture overrides of the preset, e.g. --arch hidden=32 num_blocks=4")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))


def prior_from_args(args: argparse.Namespace, name: str | None = None) -> Prior:
    """The prior the arguments describe (``name`` overrides ``--prior``), on its device."""
    prior = build_prior(name or args.prior, args.shape, args.symbols, args.head, args.classes,
                        symbols="codes" if args.codes else "pixels", preset=args.preset,
                        **parse_assignments(args.arch))
    return prior.to(resolve_device(args.device))


# ---- saved models ---------------------------------------------------------------------
def model_folder(folder: str | Path) -> Path:
    """A saved model folder, or a run (stage) folder holding one in ``model/`` -> the model folder."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() and (folder / MODEL_DIR / CONFIG_FILE).is_file():
        return folder / MODEL_DIR
    return folder


def load_model(folder: str | Path, kind: type, what: str, map_location: Any = "cpu", *, refusal: str = ""):
    """The model in `model_folder` (folder), in eval mode, checked to be a ``kind``; else a
    ValueError naming ``what`` (the flag) and ending in ``refusal`` (default: what was expected)."""
    folder = model_folder(folder)
    model = load(folder, map_location)
    if not isinstance(model, kind):
        raise ValueError(f"{what} {folder} holds a {type(model).__name__}"
                         f"{refusal or f', expected a {kind.__name__}'}")
    return model.eval()


def add_sampling_knobs(parser: argparse.ArgumentParser) -> None:
    """--temperature --top-k --top-p --cfg-scale --seed: the knobs of ``Prior.sample``."""
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (default 1)")
    parser.add_argument("--top-k", type=int, default=None, help="draw among the k most likely symbols only")
    parser.add_argument("--top-p", type=float, default=None,
                        help="draw among the most likely symbols whose probability reaches p (nucleus)")
    parser.add_argument("--cfg-scale", type=float, default=1.0,
                        help="classifier-free guidance scale (a prior trained with class_dropout > 0)")
    parser.add_argument("--seed", type=seed_value, default=0, help="seed of the draws (default 0)")


def sampling_knobs(args: argparse.Namespace) -> dict:
    """The ``add_sampling_knobs`` flags as keyword arguments of `generate` / `complete`."""
    return dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, cfg_scale=args.cfg_scale,
                seed=args.seed)

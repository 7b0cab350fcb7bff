"""The ``latentar`` command line: ``latentar <command> [options]``.

Each command is registered by an ``add_<name>_command(subparsers)`` function that sets
``func=`` to the function running it; ``main`` parses, dispatches, and turns errors a
user causes into ``latentar: error: <message>`` with exit status 2.

Which errors a user causes:

- ``USER_ERRORS``: a bad value (ValueError, TypeError), an unknown name (LookupError), a
  missing file (FileNotFoundError) or a folder that holds no model (NotAModelError). The
  code raises these for bad input only, with a message naming what was expected and got.
- an ``OSError`` whose errno is in ``USER_ERRNOS``: a path the user named cannot be
  used (no permission, read-only, a file where a folder belongs or the reverse, disk
  full). The message is the system's reason and the path.

Everything else (any other OSError, RuntimeError, ...) is a bug or a broken machine and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import ast
import errno
import json
import sys

from accelerate import PartialState

from latentar import data
from latentar.bench import add_bench_command
from latentar.evaluation import evaluate_prior
from latentar.pipeline import add_run_command
from latentar.receptive_field import add_receptive_field_command
from latentar.priors import Prior
from latentar.sampling import add_complete_command, add_sample_command
from latentar.saving import NotAModelError, load
from latentar.training import TrainConfig
from latentar.training.config import LR_SCHEDULES, MIXED_PRECISION
from latentar.training.prior_run import open_dataset, train_prior
from latentar.vqvae.train import add_encode_command, add_train_vqvae_command

USER_ERRORS = (ValueError, LookupError, FileNotFoundError, NotAModelError, TypeError)
USER_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.EEXIST, errno.ENOTDIR, errno.EISDIR,
                         errno.ENOENT, errno.ENAMETOOLONG, errno.ENOSPC, errno.EDQUOT})
USAGE_ERROR = 2


def add_data_command(subparsers) -> None:
    parser = subparsers.add_parser("data", help="manage datasets")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    fetch = actions.add_parser("fetch", help="download or extract a dataset and verify its checksums")
    fetch.add_argument("name", help="dataset name, e.g. mnist, fashion_mnist, cifar10")
    fetch.add_argument("--data-root", default=None, help="where datasets live (default: the data root)")
    fetch.set_defaults(func=run_data_fetch)


def run_data_fetch(args) -> None:
    print(data.describe_fetch(data.fetch(args.name, args.data_root)))


def add_train_prior_command(subparsers) -> None:
    default = TrainConfig()
    parser = subparsers.add_parser("train-prior", help="train a prior on a dataset and score its test split")
    parser.add_argument("--data", required=True,
                        help="dataset name (see `latentar data fetch`), or a code folder made by `latentar encode`")
    parser.add_argument("--prior", required=True, help="prior name, e.g. pixelcnn")
    parser.add_argument("--preset", default=None, help="architecture preset of the prior, e.g. tiny, small, paper")
    parser.add_argument("--head", default="categorical", help="categorical or logistic_mixture")
    parser.add_argument("--arch", nargs="*", default=[], metavar="KEY=VALUE",
                        help="architecture overrides, e.g. --arch hidden=32 num_blocks=4")
    parser.add_argument("--class-conditional", action="store_true", help="condition on the class labels")
    parser.add_argument("--subset", type=int, default=None, help="train on the first N training images only")
    parser.add_argument("--level", default=None, choices=["top", "bottom"],
                        help="with --data CODES_DIR of a VQ-VAE-2: the code level (bottom is conditioned on top)")
    parser.add_argument("--data-root", default=None, help="where datasets live (default: the data root)")
    parser.add_argument("--out", required=True, help="run folder: metrics, checkpoints, model, summary.json")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace the earlier run's outputs in --out")
    parser.add_argument("--eval-batch-size", type=int, default=256)
    for name, kind, extra in TRAIN_OPTIONS:
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=kind, default=getattr(default, name), dest=name, **extra)
    parser.set_defaults(func=run_train_prior)


# TrainConfig fields the command line sets: (name, type, argparse extras).
TRAIN_OPTIONS = [
    ("steps", int, {}), ("batch_size", int, {}), ("lr", float, {}),
    ("lr_schedule", str, {"choices": LR_SCHEDULES}), ("lr_decay", float, {}),
    ("warmup_steps", int, {}), ("grad_clip", float, {}), ("grad_accum", int, {}),
    ("mixed_precision", str, {"choices": MIXED_PRECISION}), ("ema_decay", float, {}),
    ("eval_every", int, {}), ("save_every", int, {}), ("log_every", int, {}), ("seed", int, {}),
    ("num_workers", int, {}), ("max_nonfinite", int, {}),
]


def run_train_prior(args) -> None:
    config = TrainConfig(**{name: getattr(args, name) for name, _, _ in TRAIN_OPTIONS})
    check_positive(args.eval_batch_size, "--eval-batch-size")  # used only after training: checked now
    summary = train_prior(args.data, args.prior, args.out, config, head=args.head, preset=args.preset,
                          arch=parse_assignments(args.arch), class_conditional=args.class_conditional,
                          subset=args.subset, data_root=args.data_root, resume=args.resume,
                          overwrite=args.overwrite, eval_batch_size=args.eval_batch_size, level=args.level)
    if PartialState().is_main_process:  # once, also under `accelerate launch` / torchrun
        print(json.dumps(summary["test"], indent=2))


def add_eval_command(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="score a saved prior on a dataset split (JSON out)")
    parser.add_argument("--model", required=True, help="a saved prior folder (e.g. RUN/model)")
    parser.add_argument("--data", required=True, help="dataset name")
    parser.add_argument("--split", default="test", choices=["train", "test"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--data-root", default=None, help="where datasets live (default: the data root)")
    parser.set_defaults(func=run_eval)


def run_eval(args) -> None:
    check_positive(args.batch_size, "--batch-size")
    model = load(args.model)
    if not isinstance(model, Prior):
        raise ValueError(f"{args.model} holds a {type(model).__name__}; `latentar eval` scores priors")
    dataset = open_dataset(args.data, args.split, args.data_root)
    print(json.dumps(evaluate_prior(model, dataset, batch_size=args.batch_size), indent=2))


def check_positive(value: int, flag: str) -> None:
    """A count given on the command line must be >= 1; checked before the work that uses it."""
    if value < 1:
        raise ValueError(f"{flag} must be an integer >= 1, got {value}")


def parse_assignments(items: list[str]) -> dict:
    """["hidden=32", "dropout=0.5", "name=x"] -> {"hidden": 32, "dropout": 0.5, "name": "x"}."""
    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        literal = {"true": "True", "false": "False", "none": "None"}.get(text.lower(), text)
        try:
            values[key] = ast.literal_eval(literal)
        except (ValueError, SyntaxError):
            values[key] = text  # a plain string
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentar", description="VQ-VAE + autoregressive priors.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(subparsers)
    return parser


COMMANDS = [add_data_command, add_train_prior_command, add_eval_command, add_bench_command,
            add_receptive_field_command, add_run_command, add_sample_command, add_complete_command,
            add_train_vqvae_command, add_encode_command]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (*USER_ERRORS, OSError) as e:
        if isinstance(e, OSError) and not isinstance(e, USER_ERRORS) and e.errno not in USER_ERRNOS:
            raise
        print(f"{parser.prog}: error: {_message(e)}", file=sys.stderr)
        return USAGE_ERROR
    return 0


def _message(error: BaseException) -> str:
    if isinstance(error, KeyError) and error.args:  # KeyError wraps its message in quotes
        return str(error.args[0])
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        paths = " -> ".join(str(f) for f in (error.filename, error.filename2) if f is not None)
        return f"{error.strerror}: {paths}"  # e.g. "Permission denied: runs/x/.lock"
    return str(error)


if __name__ == "__main__":
    sys.exit(main())

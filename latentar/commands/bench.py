"""``latentar bench train|sample``: training and sampling speed of a prior (JSON out)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from latentar import bench
from latentar.commands.options import add_max_memory, add_prior_arguments, add_settings, prior_from_args, settings
from latentar.training import TrainConfig

SPEED_SETTINGS = ("mixed_precision", "compile", "checkpoint_activations", "channels_last")  # TrainConfig's, timed


def add_bench_command(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="measure training and sampling speed (JSON out)",
                                   description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = parser.add_subparsers(dest="bench", required=True)
    train = kinds.add_parser("train", help="forward + backward + Adam step on random data")
    add_prior_arguments(train, default_shape="1,28,28", default_symbols=2)
    add_max_memory(train)
    train.add_argument("--batch", type=int, default=32)
    train.add_argument("--steps", type=int, default=10, help="timed steps (per side with --compare)")
    train.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    # timed without Accelerate: float32 unless --mixed-precision says otherwise
    add_settings(train, TrainConfig, {**asdict(TrainConfig()), "mixed_precision": "no"}, only=SPEED_SETTINGS)
    train.add_argument("--compare", action="store_true",
                       help="also run the baseline (eager float32), interleaved step by step; print both "
                            "and the speedup")
    train.add_argument("--profile", action="store_true",
                       help="profile one more step: each op's share of it, and the attention kernels' share")
    train.set_defaults(func=run_bench_train)
    sample = kinds.add_parser("sample", help="naive vs fast sampling, seconds per image")
    add_prior_arguments(sample, default_shape="1,28,28", default_symbols=2)
    add_max_memory(sample)
    sample.add_argument("--batch", type=int, default=16)
    sample.add_argument("--rows", type=int, help="extrapolate the naive time from this many rows (default: run it all)")
    sample.set_defaults(func=run_bench_sample)


def run_bench_train(args) -> None:
    if args.compare and args.profile:
        raise SystemExit("bench train: --profile profiles one side; run it without --compare")
    speed = settings(args, TrainConfig, only=SPEED_SETTINGS)
    prior = prior_from_args(args)
    if args.compare:
        result = bench.bench_train_compare(prior, batch=args.batch, steps=args.steps, warmup=args.warmup, **speed)
    else:
        result = bench.bench_train(prior, batch=args.batch, steps=args.steps, warmup=args.warmup,
                                   profile=args.profile, **speed)
    print(json.dumps({"preset": args.preset, **result}, indent=2))


def run_bench_sample(args) -> None:
    result = bench.bench_sample(prior_from_args(args), batch=args.batch, rows=args.rows)
    print(json.dumps({"preset": args.preset, **result}, indent=2))

"""``latentar bench train|sample``: training and sampling speed of a prior (JSON out)."""

from __future__ import annotations

import argparse
import json

from latentar import bench
from latentar.commands.options import add_prior_arguments, prior_from_args


def add_bench_command(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="measure training and sampling speed (JSON out)",
                                   description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = parser.add_subparsers(dest="bench", required=True)
    train = kinds.add_parser("train", help="forward + backward + Adam step on random data")
    add_prior_arguments(train, default_shape="1,28,28", default_symbols=2)
    train.add_argument("--batch", type=int, default=32)
    train.add_argument("--steps", type=int, default=10, help="timed steps")
    train.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    train.add_argument("--mixed-precision", default="no", choices=sorted(bench.MIXED_PRECISION))
    train.set_defaults(func=run_bench_train)
    sample = kinds.add_parser("sample", help="naive vs fast sampling, seconds per image")
    add_prior_arguments(sample, default_shape="1,28,28", default_symbols=2)
    sample.add_argument("--batch", type=int, default=16)
    sample.add_argument("--rows", type=int, help="extrapolate the naive time from this many rows (default: run it all)")
    sample.set_defaults(func=run_bench_sample)


def run_bench_train(args) -> None:
    result = bench.bench_train(prior_from_args(args), batch=args.batch, steps=args.steps, warmup=args.warmup,
                               mixed_precision=args.mixed_precision)
    print(json.dumps({"preset": args.preset, **result}, indent=2))


def run_bench_sample(args) -> None:
    result = bench.bench_sample(prior_from_args(args), batch=args.batch, rows=args.rows)
    print(json.dumps({"preset": args.preset, **result}, indent=2))

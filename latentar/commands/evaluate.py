"""``latentar eval``: score a saved prior on a dataset split (JSON out)."""

from __future__ import annotations

import json

from latentar.commands.options import add_data_options, add_max_memory, check_positive, data_config, load_model
from latentar.data import load_dataset
from latentar.evaluation import evaluate_prior
from latentar.priors import Prior


def add_eval_command(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="score a saved prior on a dataset split (JSON out)")
    parser.add_argument("--model", required=True, help="a saved prior folder (e.g. RUN/model)")
    parser.add_argument("--data", required=True, help="dataset name, or a code folder made by `latentar encode`")
    parser.add_argument("--split", default="test", choices=["train", "test"])
    parser.add_argument("--batch-size", type=int, default=256)
    add_data_options(parser)
    add_max_memory(parser)
    parser.set_defaults(func=run_eval)


def run_eval(args) -> None:
    check_positive(args.batch_size, "--batch-size")
    model = load_model(args.model, Prior, "--model", refusal="; `latentar eval` scores priors")
    data = data_config(args)
    dataset = load_dataset(data.name, args.split, data.root, **data.options)
    print(json.dumps(evaluate_prior(model, dataset, batch_size=args.batch_size), indent=2))

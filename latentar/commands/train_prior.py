"""``latentar train-prior``: train a prior on a dataset (or code grids) and score its test split."""

from __future__ import annotations

import json

from accelerate import PartialState

from latentar.commands.options import (
    add_data_options,
    add_prior_settings,
    add_run_folder_options,
    check_positive,
    data_config,
    prior_config,
    rerun,
    train_config,
)
from latentar.runs import train_prior
from latentar.saving import model_folder
from latentar.training import TrainConfig


def add_train_prior_command(subparsers) -> None:
    parser = subparsers.add_parser("train-prior", help="train a prior on a dataset and score its test split")
    parser.add_argument("--data", required=True,
                        help="dataset name (see `latentar data fetch`), or a code folder made by `latentar encode`")
    add_data_options(parser)
    add_prior_settings(parser)
    parser.add_argument("--level", default=None, choices=["top", "bottom"],
                        help="with --data CODES_DIR of a VQ-VAE-2: the code level (bottom is conditioned on top)")
    parser.add_argument("--vqvae", default=None,
                        help="with --data CODES_DIR and --sample-every: the VQ-VAE (or palette) that made the "
                             "codes, to decode the samples (its run folder or RUN/model)")
    add_run_folder_options(parser, TrainConfig())
    parser.set_defaults(func=run_train_prior)


def run_train_prior(args) -> None:
    config = train_config(args)
    check_positive(args.eval_batch_size, "--eval-batch-size")  # used only after training: checked now
    record = train_prior(data_config(args), prior_config(args), args.out, config, subset=args.subset,
                         level=args.level, vqvae=model_folder(args.vqvae) if args.vqvae else None, rerun=rerun(args),
                         eval_batch_size=args.eval_batch_size)
    if PartialState().is_main_process:  # once, also under `accelerate launch` / torchrun
        print(json.dumps(record["test"], indent=2))

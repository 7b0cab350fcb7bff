"""``latentar train-prior``: train a prior on a dataset (or code grids) and score its test split."""

from __future__ import annotations

import json

from accelerate import PartialState

from latentar.commands.options import (add_run_folder_options, check_positive, model_folder, parse_assignments,
                                       train_config)
from latentar.runs import train_prior
from latentar.training import TrainConfig


def add_train_prior_command(subparsers) -> None:
    parser = subparsers.add_parser("train-prior", help="train a prior on a dataset and score its test split")
    parser.add_argument("--data", required=True,
                        help="dataset name (see `latentar data fetch`), or a code folder made by `latentar encode`")
    parser.add_argument("--prior", required=True, help="prior name, e.g. pixelcnn")
    parser.add_argument("--preset", default=None, help="architecture preset of the prior, e.g. tiny, small, paper")
    parser.add_argument("--head", default="categorical", help="categorical or logistic_mixture")
    parser.add_argument("--arch", nargs="*", default=[], metavar="KEY=VALUE",
                        help="architecture overrides, e.g. --arch hidden=32 num_blocks=4")
    parser.add_argument("--class-conditional", action="store_true", help="condition on the class labels")
    parser.add_argument("--class-dropout", type=float, default=0.0,
                        help="with --class-conditional: probability that a training label becomes the null class "
                             "(enables --cfg-scale at sampling)")
    parser.add_argument("--level", default=None, choices=["top", "bottom"],
                        help="with --data CODES_DIR of a VQ-VAE-2: the code level (bottom is conditioned on top)")
    parser.add_argument("--vqvae", default=None,
                        help="with --data CODES_DIR and --sample-every: the VQ-VAE that made the codes, to decode "
                             "the samples (its run folder or RUN/model)")
    add_run_folder_options(parser, TrainConfig())
    parser.set_defaults(func=run_train_prior)


def run_train_prior(args) -> None:
    config = train_config(args)
    check_positive(args.eval_batch_size, "--eval-batch-size")  # used only after training: checked now
    summary = train_prior(args.data, args.prior, args.out, config, head=args.head, preset=args.preset,
                          arch=parse_assignments(args.arch), class_conditional=args.class_conditional,
                          class_dropout=args.class_dropout, subset=args.subset, data_root=args.data_root, resume=args.resume,
                          overwrite=args.overwrite, eval_batch_size=args.eval_batch_size, level=args.level,
                          vqvae=model_folder(args.vqvae) if args.vqvae else None)
    if PartialState().is_main_process:  # once, also under `accelerate launch` / torchrun
        print(json.dumps(summary["test"], indent=2))

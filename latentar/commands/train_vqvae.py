"""``latentar train-vqvae``: train a VQ-VAE on a dataset and score its reconstructions."""

from __future__ import annotations

import json

from accelerate import PartialState

from latentar.commands.options import (
    add_data_options,
    add_run_folder_options,
    add_settings,
    data_config,
    parse_assignments,
    rerun,
    settings,
    train_config,
)
from latentar.runs import train_vqvae
from latentar.training import TrainConfig
from latentar.vqvae import VQVAE, VQVAEConfig

# the VQVAEConfig fields with a flag of their own; --arch sets any field
ARCH_FLAGS = ("codebook_size", "downsample", "hidden", "embed_dim", "codebook_update", "hierarchical")


def add_train_vqvae_command(subparsers) -> None:
    parser = subparsers.add_parser("train-vqvae", help="train a VQ-VAE on a dataset; score its reconstructions")
    parser.add_argument("--data", required=True, help="dataset name, e.g. mnist (see `latentar data fetch`)")
    add_data_options(parser)
    parser.add_argument("--preset", default="mnist", choices=sorted(VQVAE.presets),
                        help="architecture preset (default mnist); the options below override it")
    add_settings(parser, VQVAEConfig, None, only=ARCH_FLAGS)  # not given: the preset's value
    parser.add_argument("--arch", nargs="*", default=[], metavar="KEY=VALUE",
                        help="any other VQVAEConfig field, e.g. --arch res_blocks=1 beta=0.5")
    add_run_folder_options(parser, TrainConfig(batch_size=128))
    parser.set_defaults(func=run_train_vqvae)


def run_train_vqvae(args) -> None:
    given = {name: value for name, value in settings(args, VQVAEConfig, only=ARCH_FLAGS).items() if value is not None}
    vqvae = VQVAE.make_config(args.preset, **{**parse_assignments(args.arch), **given})
    record = train_vqvae(data_config(args), vqvae, args.out, train_config(args), subset=args.subset,
                         rerun=rerun(args), eval_batch_size=args.eval_batch_size)
    if PartialState().is_main_process:
        print(json.dumps(record["test"], indent=2))

"""``latentar train-vqvae`` (train a VQ-VAE, score its reconstructions) and ``latentar encode``
(a dataset's splits to code grids)."""

from __future__ import annotations

import json

from accelerate import PartialState

from latentar.commands.options import (add_data_root, add_max_memory, add_run_folder_options, model_folder,
                                       parse_assignments, train_config)
from latentar.runs import SPLITS, encode_splits, train_vqvae
from latentar.training import TrainConfig
from latentar.vqvae import VQVAE

ARCH_FLAGS = ("codebook_size", "downsample", "hidden", "embed_dim", "codebook_update", "hierarchical")


def add_train_vqvae_command(subparsers) -> None:
    parser = subparsers.add_parser("train-vqvae", help="train a VQ-VAE on a dataset; score its reconstructions")
    parser.add_argument("--data", required=True, help="dataset name, e.g. mnist (see `latentar data fetch`)")
    parser.add_argument("--preset", default="mnist", choices=sorted(VQVAE.presets),
                        help="architecture preset (default mnist); the options below override it")
    parser.add_argument("--codebook-size", type=int, help="K, codes in the (bottom) codebook")
    parser.add_argument("--downsample", type=int, help="n: codes are (H/2^n, W/2^n); 28×28 -> 7×7 is n=2")
    parser.add_argument("--hidden", type=int, help="channels of the encoder and decoder")
    parser.add_argument("--embed-dim", type=int, help="D, the width of a code vector")
    parser.add_argument("--codebook-update", choices=["ema", "loss"], help="how the codebook learns")
    parser.add_argument("--hierarchical", action="store_true", default=None,
                        help="VQ-VAE-2: add a top code grid at half the bottom resolution")
    parser.add_argument("--arch", nargs="*", default=[], metavar="KEY=VALUE",
                        help="any other VQVAEConfig field, e.g. --arch res_blocks=1 beta=0.5")
    add_run_folder_options(parser, TrainConfig(batch_size=128))
    parser.set_defaults(func=run_train_vqvae)


def run_train_vqvae(args) -> None:
    overrides = parse_assignments(args.arch)
    overrides.update({name: getattr(args, name) for name in ARCH_FLAGS if getattr(args, name) is not None})
    summary = train_vqvae(args.data, args.out, train_config(args), VQVAE.make_config(args.preset, **overrides),
                          data_root=args.data_root, subset=args.subset, resume=args.resume,
                          overwrite=args.overwrite, eval_batch_size=args.eval_batch_size)
    if PartialState().is_main_process:
        print(json.dumps(summary["test"], indent=2))


def add_encode_command(subparsers) -> None:
    parser = subparsers.add_parser("encode", help="encode a dataset's splits to code grids with a trained VQ-VAE")
    parser.add_argument("--vqvae", required=True, help="a trained VQ-VAE: its run folder or RUN/model")
    parser.add_argument("--data", required=True, help="dataset name, e.g. mnist")
    parser.add_argument("--out", required=True, help="folder for the code grids and manifest.json")
    parser.add_argument("--split", choices=SPLITS, default=None, help="one split only (default: both)")
    add_data_root(parser)
    parser.add_argument("--batch-size", type=int, default=256)
    add_max_memory(parser)
    parser.set_defaults(func=run_encode)


def run_encode(args) -> None:
    manifest = encode_splits(model_folder(args.vqvae), args.data, args.out, data_root=args.data_root,
                             batch_size=args.batch_size, splits=(args.split,) if args.split else SPLITS)
    print(json.dumps({"out": args.out, "vqvae_fingerprint": manifest["vqvae_fingerprint"],
                      "grids": manifest["grids"],
                      "counts": {s: e["count"] for s, e in manifest["splits"].items()}}, indent=2))

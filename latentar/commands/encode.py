"""``latentar encode``: a dataset's splits to code grids, with a trained VQ-VAE (the codes stage of a recipe).
Under ``accelerate launch`` each of P processes encodes every P-th image into the same files."""

from __future__ import annotations

import json

from latentar.commands.options import (
    add_data_options,
    add_device,
    add_max_memory,
    check_positive,
    data_config,
    is_main,
    process_device,
)
from latentar.data.catalog import SPLITS
from latentar.runs import encode_splits
from latentar.saving import model_folder


def add_encode_command(subparsers) -> None:
    parser = subparsers.add_parser("encode", help="encode a dataset's splits to code grids with a trained VQ-VAE")
    parser.add_argument("--vqvae", required=True,
                        help="a trained VQ-VAE or a fitted palette: its run folder or RUN/model")
    parser.add_argument("--data", required=True, help="dataset name, e.g. mnist")
    parser.add_argument("--out", required=True, help="folder for the code grids, manifest.json and summary.json")
    parser.add_argument("--split", choices=SPLITS, default=None, help="one split only (default: both)")
    add_data_options(parser)
    parser.add_argument("--batch-size", type=int, default=256, help="images encoded per batch")
    add_device(parser)
    add_max_memory(parser)
    parser.set_defaults(func=run_encode)


def run_encode(args) -> None:
    check_positive(args.batch_size, "--batch-size")
    device, processes = process_device(args)
    record = encode_splits(model_folder(args.vqvae), data_config(args), args.out, batch_size=args.batch_size,
                           splits=(args.split,) if args.split else SPLITS, device=device, processes=processes)
    if is_main(processes):
        print(json.dumps({"out": args.out, **{key: record[key] for key in ("vqvae_fingerprint", "grids", "counts")}},
                         indent=2))

"""``latentar fit-palette``: fit Image GPT's colour palette to a dataset and score its reconstructions."""

from __future__ import annotations

import json
from dataclasses import asdict

from latentar.commands.options import add_data_options, add_settings, data_config, settings
from latentar.runs import fit_palette
from latentar.vqvae import PaletteConfig


def add_fit_palette_command(subparsers) -> None:
    parser = subparsers.add_parser("fit-palette", help="fit Image GPT's colour palette (k-means of the pixels' "
                                                       "colours) to a dataset; score its reconstructions")
    parser.add_argument("--data", required=True, help="dataset name, e.g. fashion_mnist (see `latentar data fetch`)")
    add_data_options(parser)
    add_settings(parser, PaletteConfig, asdict(PaletteConfig()))
    parser.add_argument("--out", required=True, help="folder for model/, summary.json and reconstructions.png")
    parser.add_argument("--overwrite", action="store_true", help="replace a palette already in --out")
    parser.set_defaults(func=run_fit_palette)


def run_fit_palette(args) -> None:
    record = fit_palette(data_config(args), PaletteConfig(**settings(args, PaletteConfig)), args.out,
                         overwrite=args.overwrite)
    print(json.dumps({"fingerprint": record["fingerprint"], **record["test"]}, indent=2))

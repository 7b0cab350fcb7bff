"""``latentar run RECIPE``: a recipe end to end (VQ-VAE, codes, prior(s), samples, report)."""

from __future__ import annotations

import json
from pathlib import Path

from latentar.commands.options import add_data_options, add_max_memory, device_name
from latentar.config import load_recipe, split_assignment
from latentar.runs.recipe import process_state, run_recipe


def add_run_command(subparsers) -> None:
    parser = subparsers.add_parser("run", help="run a recipe: VQ-VAE, codes, prior(s), samples and a report")
    parser.add_argument("recipe", help="a recipe (recipes/*.toml) or a run's resolved recipe.json")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe value, e.g. --set prior_train.steps=500 (repeatable)")
    parser.add_argument("--out", default=None, help="the run folder (default: runs/RECIPE_NAME)")
    add_data_options(parser)  # set data.root and data.options
    parser.add_argument("--device", type=device_name, default=None, metavar="DEVICE",
                        help="sets sampling.device: where the run draws its samples and reconstructions "
                             "(auto, cpu, cuda or cuda:N; default: the recipe's, else auto)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start the run folder afresh: remove the stages, codes and report of an earlier run")
    add_max_memory(parser)
    parser.set_defaults(func=run_command)


def run_command(args) -> None:
    options = [f"data.options.{key}={text}" for key, text in
               (split_assignment(item, "--data-option") for item in args.data_option)]
    overrides = [*args.overrides, *([f"data.root={args.data_root}"] if args.data_root else []), *options,
                 *([f"sampling.device={args.device}"] if args.device else [])]
    recipe = load_recipe(args.recipe, overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.recipe).stem
    summary = run_recipe(recipe, out, overwrite=args.overwrite)
    if process_state().is_main_process:
        print(json.dumps(summary, indent=2))
        print(f"wrote {out}/: summary.json, samples.png, curves.png, and one folder per stage")

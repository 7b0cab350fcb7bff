"""``latentar sweep``: draw n samples per value of a sampling knob (--cfg-scale 1,1.5,2,3,5,
--temperature 0.8,0.9,1.0, --top-k, --top-p; one knob or several), score each set as
``eval-samples`` does, and write sweep.json and sweep.png (FID vs the knob, precision vs recall)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from latentar.commands.eval_samples import add_measure_arguments, measuring
from latentar.commands.options import add_sampling_knobs, check_sampling_knobs
from latentar.commands.sample import load_models
from latentar.files import atomic_write_json
from latentar.images import check_image_path
from latentar.priors.engine import Knobs
from latentar.quality.drawn import KNOBS
from latentar.quality.sweep import plot_sweep, sweep

JSON_FILE, FIGURE_FILE = "sweep.json", "sweep.png"


def add_sweep_command(subparsers) -> None:
    parser = subparsers.add_parser("sweep", help="FID and precision/recall of a prior's samples across knob values",
                                   description=__doc__)
    parser.add_argument("--prior", required=True, help="the saved prior to draw from (a code prior needs --vqvae)")
    parser.add_argument("--vqvae", default=None, help="the VQ-VAE (or palette) that decodes --prior's codes")
    parser.add_argument("--bottom-prior", default=None, help="VQ-VAE-2: the bottom prior (--prior is the top one)")
    add_measure_arguments(parser, "images drawn and measured per knob value")
    add_sampling_knobs(parser, lists=True)
    parser.add_argument("--out", required=True, help=f"the folder to write {JSON_FILE} and {FIGURE_FILE} into")
    parser.set_defaults(func=run_sweep)


def swept_knobs(args: argparse.Namespace) -> tuple[dict[str, list], dict]:
    """({knob: its values} of the knobs given several values, {knob: value} of the others: a single
    given value or the default; a swept knob's default)."""
    given = {knob: value if isinstance(value, list) else [value] for knob, value in  # a default is one value
             ((knob, getattr(args, knob)) for knob in KNOBS)}
    values = {knob: v for knob, v in given.items() if len(v) > 1}
    if not values:
        raise ValueError("give at least one knob several values to sweep, e.g. --cfg-scale 1,1.5,2,3,5 or "
                         "--temperature 0.8,0.9,1.0")
    defaults = asdict(Knobs())  # what Prior.sample draws with when a knob is not given
    fixed = {knob: defaults[knob] if knob in values else v[0] for knob, v in given.items()}
    return values, {**fixed, "seed": args.seed, "batch_size": args.batch_size}


def run_sweep(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; expected a folder for {JSON_FILE} and {FIGURE_FILE}")
    check_image_path(out / FIGURE_FILE)  # before any work
    check_sampling_knobs(args)
    values, fixed = swept_knobs(args)
    prior, vqvae, bottom = load_models(args)
    extractor, reference, classifier = measuring(args)
    points = sweep(extractor, reference, prior, vqvae, args.n, values, fixed, bottom_prior=bottom,
                   classifier=classifier, batch_size=args.feature_batch_size)
    result = {"features": extractor.name, "n": args.n, "reference": reference.name,
              "reference_n": len(reference.images), "source": {"prior": args.prior, "vqvae": args.vqvae,
                                                                "bottom_prior": args.bottom_prior},
              "swept": values, "fixed": fixed, "points": points}
    atomic_write_json(out / JSON_FILE, result)
    plot_sweep(points, out / FIGURE_FILE)
    print(json.dumps(result, indent=2))
    print(f"wrote {out / JSON_FILE} and {out / FIGURE_FILE}")

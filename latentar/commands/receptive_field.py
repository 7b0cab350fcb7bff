"""``latentar receptive-field``: draw the positions a symbol's log-prob depends on (PNG + JSON)."""

from __future__ import annotations

import argparse
import json

from latentar.commands.options import add_max_memory, add_prior_arguments, load_model, prior_from_args
from latentar.images import check_image_path, save_image
from latentar.priors.base import Prior, list_priors
from latentar.receptive_field import COLOURS, LEGEND, field_figure
from latentar.receptive_field import __doc__ as FIELD_HELP  # the package exports the function of that name
from latentar.registry import PRIORS


def parse_position(text: str) -> tuple[int, int]:
    """'h,w' -> (h, w)."""
    try:
        position = tuple(int(v) for v in text.split(","))
    except ValueError:
        position = ()
    if len(position) != 2:
        raise argparse.ArgumentTypeError(f"position must be h,w with integers, got {text!r}")
    return position


def add_receptive_field_command(subparsers) -> None:
    p = subparsers.add_parser(
        "receptive-field", help="draw the positions a symbol's log-prob depends on",
        description=FIELD_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_prior_arguments(p, default_shape="1,15,15", default_symbols=256, prior_required=False)
    add_max_memory(p)
    p.add_argument("--model", help="a saved prior folder (instead of --prior)")
    p.add_argument("--all", action="store_true", help="every registered prior side by side")
    p.add_argument("--position", type=parse_position, help="h,w of the target symbol (default: the centre)")
    p.add_argument("--order", type=int, default=0,
                   help="which of the prior's listed orders (an index into prior.orders: lmconv lists num_orders "
                        "symmetric scans; raster priors have only 0) (default 0)")
    p.add_argument("--threshold", type=float, default=0.0,
                   help="fraction of the largest gradient a position must exceed (default 0)")
    p.add_argument("--scale", type=int, default=12, help="pixels per grid cell in the image (default 12)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.set_defaults(func=run_receptive_field)


def chosen_priors(args) -> dict[str, Prior]:
    """The priors of exactly one of --prior, --model, --all, by name."""
    chosen = [flag for flag, value in (("--prior", args.prior), ("--model", args.model),
                                       ("--all", args.all)) if value]
    if len(chosen) != 1:
        raise ValueError(f"receptive-field: give exactly one of --prior, --model, --all; got {chosen or 'none'}")
    if args.model:
        prior = load_model(args.model, Prior, "receptive-field: --model", args.device)
        return {prior.name: prior}
    if args.all:
        return {name: prior_from_args(args, name) for name in list_priors() if not PRIORS.get(name).composite}
    return {args.prior: prior_from_args(args)}


def run_receptive_field(args) -> None:
    check_image_path(args.out)
    if args.scale < 1:
        raise ValueError(f"--scale (pixels per grid cell) must be an integer >= 1, got {args.scale}")
    image, summaries = field_figure(chosen_priors(args), args.position, args.threshold, args.scale, args.order)
    save_image(image, args.out)
    print(json.dumps({"out": str(args.out), "threshold": args.threshold,
                      "colours": {k: list(v) for k, v in COLOURS.items()}, "legend": LEGEND,
                      "priors": summaries},
                     indent=2))

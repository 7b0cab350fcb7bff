"""``latentar sample`` (draw images from a prior, decoded by a VQ-VAE in code mode) and
``latentar complete`` (redraw the lower part of real test images)."""

from __future__ import annotations

import json
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes

from latentar.commands.options import (
    add_data_options,
    add_device,
    add_max_memory,
    add_sampling_knobs,
    check_sampling_knobs,
    data_config,
    load_model,
    sampling_knobs,
)
from latentar.data import load_dataset
from latentar.data.codes import check_codes_source
from latentar.devices import resolve_device
from latentar.files import atomic_write_bytes
from latentar.generation import check_generation, check_pair, class_rows, complete, completion_grid, generate
from latentar.images import check_image_path, check_nrow, save_grid, save_individual
from latentar.masks import MASK_HELP, region
from latentar.priors.base import Prior, check_num_samples
from latentar.saving import model_folder
from latentar.vqvae import Tokenizer


def add_sample_command(subparsers) -> None:
    parser = subparsers.add_parser("sample", help="draw images from a prior (decoded by a VQ-VAE in code mode)")
    add_model_arguments(parser)
    parser.add_argument("-n", type=int, default=64, help="images to draw (default 64)")
    parser.add_argument("--class", dest="label", type=int, default=None,
                        help="class to draw; a class-conditional prior without it draws one row per class")
    parser.add_argument("--nrow", type=int, default=8, help="images per grid row (default 8)")
    parser.add_argument("--save-codes", action="store_true",
                        help="also write the drawn symbol grids to OUT.codes.safetensors")
    parser.add_argument("--save-individual", action="store_true",
                        help="also write each image as a PNG into a folder named after OUT")
    parser.set_defaults(func=run_sample)


def add_complete_command(subparsers) -> None:
    parser = subparsers.add_parser("complete", help="redraw a region of real test images given the rest")
    add_model_arguments(parser)
    parser.add_argument("--data", required=True, help="dataset of the real images, e.g. mnist")
    add_data_options(parser)
    region = parser.add_mutually_exclusive_group(required=True)
    region.add_argument("--keep-rows", type=int,
                        help="rows kept from each image: pixel rows in pixel mode, code rows in code mode")
    region.add_argument("--mask", metavar="REGION",
                        help=f"the region redrawn: {MASK_HELP.replace('%', '%%')}; halves, centre and random lie "
                             "on the prior's grid (codes in code mode), a box and a PNG on the image's pixels "
                             "(in code mode: the codes they touch); raster priors redraw only a region that "
                             "their order reaches last (e.g. bottom), any-order priors (lmconv) any region")
    parser.add_argument("-n", type=int, default=8, help="test images, one grid row each (default 8)")
    parser.add_argument("--samples", type=int, default=4, help="completions per image (default 4)")
    parser.set_defaults(func=run_complete)


def add_model_arguments(parser) -> None:
    parser.add_argument("--prior", "--model", dest="prior", required=True,
                        help="a saved prior folder (or a run's stage folder, e.g. runs/main/prior)")
    parser.add_argument("--vqvae", default=None, help="the VQ-VAE (or palette) that made the prior's codes (code mode)")
    parser.add_argument("--bottom-prior", default=None,
                        help="VQ-VAE-2: the bottom prior (--prior is then the top prior)")
    add_sampling_knobs(parser)
    add_device(parser)
    add_max_memory(parser)
    parser.add_argument("--out", required=True, help="the PNG grid to write")


def load_models(args) -> tuple[Prior, Any, Prior | None]:
    """--prior, --vqvae and --bottom-prior on --device, checked to belong together."""
    device = resolve_device(args.device)
    prior = load_model(args.prior, Prior, "--prior", device)
    vqvae = None if args.vqvae is None else load_model(args.vqvae, Tokenizer, "--vqvae", device,
                                                              refusal=", expected a VQ-VAE or a palette")
    bottom = None if args.bottom_prior is None else load_model(args.bottom_prior, Prior, "--bottom-prior", device)
    if vqvae is not None:
        for folder in [args.prior] + ([args.bottom_prior] if bottom is not None else []):
            check_codes_source(model_folder(folder), vqvae)
    check_pair(prior, vqvae, bottom)
    return prior, vqvae, bottom


def levels_of(prior: Prior, vqvae: Any | None) -> int:
    """Pixel levels of the drawn images: 256 when a VQ-VAE decodes them, else the prior's symbols."""
    return 256 if vqvae is not None else prior.spec.num_symbols


def run_sample(args) -> None:
    check_image_path(args.out)  # the arguments first, before any work
    check_sampling_knobs(args)
    check_num_samples(args.n)
    check_nrow(args.nrow)
    prior, vqvae, bottom = load_models(args)
    classes = prior.spec.num_classes if args.label is None else None  # then one row per class
    nrow = args.nrow if classes is None else -(-args.n // classes)
    n = args.n if classes is None else nrow * classes
    check_generation(prior, vqvae, n, bottom, f"sample -n {args.n}")  # before anything is allocated
    labels = args.label if classes is None else class_rows(classes, nrow)
    drawn = generate(prior, vqvae, n, labels, bottom_prior=bottom, **sampling_knobs(args))
    levels = levels_of(prior, vqvae)
    out = save_grid(drawn.images, args.out, nrow=nrow, levels=levels)
    print(f"wrote {n} samples to {out}")
    if args.save_codes:
        names = vqvae.code_levels if vqvae is not None else ["pixels"]
        path = out.with_suffix(".codes.safetensors")
        atomic_write_bytes(path, safetensors_bytes({name: s.contiguous() for name, s in zip(names, drawn.symbols)}))
        print(f"wrote the drawn grids ({', '.join(names)}) to {path}")
    if args.save_individual:
        folder = out.with_suffix("")
        save_individual(drawn.images, folder, levels)
        print(f"wrote {n} PNGs to {folder}/")


def run_complete(args) -> None:
    check_image_path(args.out)  # before any work
    check_sampling_knobs(args)
    prior, vqvae, bottom = load_models(args)
    if bottom is not None:
        raise ValueError("completion works with one prior; --bottom-prior is not supported")
    data = data_config(args)
    test = load_dataset(data.name, "test", data.root, **data.options)
    if args.n < 1 or args.n > len(test):
        raise ValueError(f"-n must lie in [1, {len(test)}] (the test split's size), got {args.n}")
    items = [test[i] for i in range(args.n)]
    images = torch.stack([image for image, _ in items])  # uint8 (n, C, H, W)
    labels = torch.tensor([label for _, label in items])  # (n,)
    _, h, w = prior.spec.shape
    image_hw = (images.shape[2], images.shape[3])
    known = None if args.mask is None else ~region(args.mask, image_hw, (h, w), seed=args.seed)
    result = complete(prior, images, args.keep_rows, args.samples, known=known, vqvae=vqvae,
                      labels=labels if prior.spec.num_classes is not None else None, **sampling_knobs(args))
    grid, nrow = completion_grid(result, levels_of(prior, vqvae))
    path = save_grid(grid, args.out, nrow=nrow)
    nats = result.region_nats.tolist()
    print(json.dumps({"out": str(path), "region": args.mask or f"rows >= {args.keep_rows}",
                      "region_nats_per_image": nats, "region_nats": sum(nats) / len(nats)}, indent=2))

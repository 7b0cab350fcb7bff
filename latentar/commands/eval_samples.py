"""``latentar eval-samples``: FID, KID, precision/recall, density/coverage, IS and class accuracy
of a prior's samples, of a ``.npy`` or folder of images, or of a VQ-VAE's reconstructions,
against a reference split, as JSON that names the features, the count and the split."""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from latentar.commands.options import (
    add_data_options,
    add_device,
    add_max_memory,
    add_sampling_knobs,
    check_positive,
    check_sampling_knobs,
    load_model,
    parse_assignments,
    sampling_knobs,
)
from latentar.commands.sample import levels_of, load_models
from latentar.data import load_dataset
from latentar.devices import resolve_device
from latentar.files import atomic_write_json
from latentar.generation import check_generation, generate
from latentar.progress import progress_bar
from latentar.quality import INCEPTION, feature_extractor, measure
from latentar.quality.features import CLASSIFIER, ClassifierFeatures
from latentar.quality.inputs import read_images
from latentar.saving import model_folder
from latentar.vqvae import VQVAE


def add_eval_samples_command(subparsers) -> None:
    parser = subparsers.add_parser("eval-samples", help="FID, KID, precision/recall, ... of samples vs a split",
                                   description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prior", help="draw the images from this saved prior (a code prior needs --vqvae)")
    source.add_argument("--images", help="measure these images: a .npy (N, C, H, W) / (N, H, W) or a folder of PNGs")
    source.add_argument("--reconstructions", action="store_true",
                        help="measure --vqvae's reconstructions of the reference split (the two-stage floor)")
    parser.add_argument("--vqvae", default=None, help="the VQ-VAE that decodes --prior's codes, or --reconstructions'")
    parser.add_argument("--bottom-prior", default=None, help="VQ-VAE-2: the bottom prior (--prior is the top one)")
    parser.add_argument("--data", required=True, help="the dataset of the reference split, e.g. mnist")
    add_data_options(parser)
    parser.add_argument("--split", default="test", choices=("train", "test"), help="the reference split")
    parser.add_argument("-n", type=int, default=1000, help="images measured (drawn, read or reconstructed)")
    parser.add_argument("--reference-n", type=int, default=None,
                        help="reference images: the split's first N; None: as many as -n (at most the whole split)")
    parser.add_argument("--features", default=INCEPTION,
                        help="the feature extractor: 'inception' (needs its weights on this machine) or "
                             "'classifier:PATH' (a folder of latentar train-classifier; offline)")
    parser.add_argument("--inception-weights", default=None,
                        help="the Inception 2015-12-05 weights file; None: look in torch-fidelity's cache")
    parser.add_argument("--classifier", default=None,
                        help="the classifier that judges a class-conditional prior's classes; None: the "
                             "--features classifier, if it is one")
    parser.add_argument("--feature-batch-size", type=int, default=256,
                        help="images per forward pass of the features and of the VQ-VAE's reconstructions")
    add_device(parser)
    add_sampling_knobs(parser)
    add_max_memory(parser)
    parser.add_argument("--out", default=None, help="also write the JSON to this file")
    parser.set_defaults(func=run_eval_samples)


def run_eval_samples(args: argparse.Namespace) -> None:
    check_positive(args.n, "-n")
    check_positive(args.feature_batch_size, "--feature-batch-size")
    check_sampling_knobs(args)
    if args.reconstructions and args.vqvae is None:
        raise ValueError("--reconstructions needs --vqvae, the VQ-VAE whose reconstructions are measured")
    if args.images is not None and (args.vqvae or args.bottom_prior):
        raise ValueError("--images are measured as they are; --vqvae and --bottom-prior go with --prior")
    reference_set = load_dataset(args.data, args.split, args.data_root,
                                 **parse_assignments(args.data_option, "--data-option"))
    reference = f"{args.data}/{args.split}"
    count = min(args.reference_n or args.n, len(reference_set))
    reference_images = first_images(reference_set, count, reference)
    levels = reference_set.num_symbols
    extractor = feature_extractor(classifier_spec(args.features), inception_weights=args.inception_weights,
                                  device=resolve_device(args.device))
    images, labels, source = images_to_measure(args, reference_images, levels)
    classifier = None if args.classifier is None else feature_extractor(classifier_spec(CLASSIFIER + args.classifier),
                                                                         device=resolve_device(args.device))
    assert classifier is None or isinstance(classifier, ClassifierFeatures)
    result = {"source": source, **measure(extractor, images, reference_images, levels=levels, reference=reference,
                                          labels=labels, classifier=classifier, batch_size=args.feature_batch_size)}
    print(json.dumps(result, indent=2))
    if args.out is not None:
        atomic_write_json(args.out, result)


def classifier_spec(spec: str) -> str:
    """'classifier:RUN' -> 'classifier:RUN/model' when RUN is a run folder holding the model."""
    if spec.startswith(CLASSIFIER) and spec != CLASSIFIER:
        return CLASSIFIER + str(model_folder(spec.removeprefix(CLASSIFIER)))
    return spec


def first_images(dataset, n: int, name: str) -> torch.Tensor:
    """The first ``n`` images of a split of (uint8 image, label) items -> uint8 (n, C, H, W)."""
    return torch.stack([dataset[i][0] for i in progress_bar(range(n), desc=f"read {name}", unit="image")])


def images_to_measure(args: argparse.Namespace, reference_images: torch.Tensor,
                      levels: int) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """(uint8 images (n, C, H, W), the class each was drawn for or None, what they are) of the
    source the arguments name: --prior, --images or --reconstructions."""
    if args.images is not None:
        _, C, H, W = reference_images.shape
        return read_images(args.images, (C, H, W), levels, args.n), None, {"images": args.images}
    if args.reconstructions:
        vqvae = load_model(args.vqvae, VQVAE, "--vqvae", resolve_device(args.device))
        if args.n > len(reference_images):
            raise ValueError(f"-n {args.n} reconstructions need as many reference images; --reference-n is "
                             f"{len(reference_images)}")
        recon = torch.cat([vqvae.reconstruct(batch).cpu() for batch in progress_bar(
            reference_images[:args.n].split(args.feature_batch_size), desc="reconstruct", unit="batch")])
        return recon, None, {"reconstructions_by": args.vqvae}
    prior, vqvae, bottom = load_models(args)
    drawn_levels = levels_of(prior, vqvae)
    if drawn_levels != levels:
        raise ValueError(f"the prior's images take {drawn_levels} levels, the reference split's {levels}: "
                         f"measure against the dataset the prior learned")
    check_generation(prior, vqvae, args.n, bottom, f"eval-samples -n {args.n}")
    classes = prior.spec.num_classes
    labels = None if classes is None else torch.arange(args.n) % classes  # every class in turn
    drawn = generate(prior, vqvae, args.n, labels, bottom_prior=bottom, **sampling_knobs(args))
    knobs = {**sampling_knobs(args), "classes": "cycled" if classes else None}
    return drawn.images.cpu(), labels, {"prior": args.prior, "vqvae": args.vqvae, "bottom_prior": args.bottom_prior,
                                        "sampling": knobs}

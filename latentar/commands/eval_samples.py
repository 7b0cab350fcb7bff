"""``latentar eval-samples``: FID, KID, precision/recall, density/coverage, IS and class accuracy
of a prior's samples, of a ``.npy`` or folder of images, or of a VQ-VAE's reconstructions,
against a reference split, as JSON that names the features, the count and the split."""

from __future__ import annotations

import argparse
import json
from typing import Any, NamedTuple

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
from latentar.commands.sample import load_models
from latentar.data import load_dataset
from latentar.devices import resolve_device
from latentar.files import atomic_write_json
from latentar.progress import progress_bar
from latentar.quality import INCEPTION, feature_extractor, measure
from latentar.quality.drawn import check_levels, draw_to_measure, reconstructions
from latentar.quality.features import CLASSIFIER, ClassifierFeatures, Extractor
from latentar.quality.inputs import read_images
from latentar.quality.measure import Reference, reference_features
from latentar.saving import model_folder
from latentar.vqvae import Tokenizer


def add_eval_samples_command(subparsers) -> None:
    parser = subparsers.add_parser("eval-samples", help="FID, KID, precision/recall, ... of samples vs a split",
                                   description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prior", help="draw the images from this saved prior (a code prior needs --vqvae)")
    source.add_argument("--images", help="measure these images: a .npy (N, C, H, W) / (N, H, W) or a folder of PNGs")
    source.add_argument("--reconstructions", action="store_true",
                        help="measure --vqvae's reconstructions of the reference split (the two-stage floor)")
    parser.add_argument("--vqvae", default=None, help="the VQ-VAE (or palette) that decodes --prior's codes, or "
                        "--reconstructions'")
    parser.add_argument("--bottom-prior", default=None, help="VQ-VAE-2: the bottom prior (--prior is the top one)")
    add_measure_arguments(parser, "images measured (drawn, read or reconstructed)")
    add_sampling_knobs(parser)
    parser.add_argument("--out", default=None, help="also write the JSON to this file")
    parser.set_defaults(func=run_eval_samples)


def add_measure_arguments(parser: argparse.ArgumentParser, counted: str) -> None:
    """The reference split, -n (``counted``: what it counts), the feature extractor and the judging
    classifier, their batch size, --device and --max-memory: what every measuring command takes."""
    parser.add_argument("--data", required=True, help="the dataset of the reference split, e.g. mnist")
    add_data_options(parser)
    parser.add_argument("--split", default="test", choices=("train", "test"), help="the reference split")
    parser.add_argument("-n", type=int, default=1000, help=counted)
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
    add_max_memory(parser)


class Measuring(NamedTuple):
    """What the `add_measure_arguments` name, ready: the features, the reference in them, the judge."""

    extractor: Extractor
    reference: Reference
    classifier: ClassifierFeatures | None


def measuring(args: argparse.Namespace) -> Measuring:
    """The extractor, the reference split's first images in its features, and the judging classifier."""
    check_positive(args.n, "-n")
    check_positive(args.feature_batch_size, "--feature-batch-size")
    device = resolve_device(args.device)
    reference_set = load_dataset(args.data, args.split, args.data_root,
                                 **parse_assignments(args.data_option, "--data-option"))
    name = f"{args.data}/{args.split}"
    count = min(args.reference_n or args.n, len(reference_set))
    extractor = feature_extractor(classifier_spec(args.features), inception_weights=args.inception_weights,
                                  device=device)
    classifier = None if args.classifier is None else feature_extractor(classifier_spec(CLASSIFIER + args.classifier),
                                                                         device=device)
    assert classifier is None or isinstance(classifier, ClassifierFeatures)
    reference = reference_features(extractor, first_images(reference_set, count, name),
                                   levels=reference_set.num_symbols, name=name, batch_size=args.feature_batch_size)
    return Measuring(extractor, reference, classifier)


def run_eval_samples(args: argparse.Namespace) -> None:
    check_sampling_knobs(args)
    if args.reconstructions and args.vqvae is None:
        raise ValueError("--reconstructions needs --vqvae, the VQ-VAE whose reconstructions are measured")
    if args.images is not None and (args.vqvae or args.bottom_prior):
        raise ValueError("--images are measured as they are; --vqvae and --bottom-prior go with --prior")
    extractor, reference, classifier = measuring(args)
    images, labels, source = images_to_measure(args, reference)
    result = {"source": source, **measure(extractor, images, reference, labels=labels, classifier=classifier,
                                          batch_size=args.feature_batch_size)}
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


def images_to_measure(args: argparse.Namespace,
                      reference: Reference) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """(uint8 images (n, C, H, W), the class each was drawn for or None, what they are) of the
    source the arguments name: --prior, --images or --reconstructions."""
    if args.images is not None:
        _, C, H, W = reference.images.shape
        return read_images(args.images, (C, H, W), reference.levels, args.n), None, {"images": args.images}
    if args.reconstructions:
        vqvae = load_model(args.vqvae, Tokenizer, "--vqvae", resolve_device(args.device),
                           refusal=", expected a VQ-VAE or a palette")
        if args.n > len(reference.images):
            raise ValueError(f"-n {args.n} reconstructions need as many reference images; --reference-n is "
                             f"{len(reference.images)}")
        recon = reconstructions(vqvae, reference.images[:args.n], args.feature_batch_size)
        return recon, None, {"reconstructions_by": args.vqvae}
    prior, vqvae, bottom = load_models(args)
    check_levels(prior, vqvae, reference.levels)
    images, labels = draw_to_measure(prior, vqvae, args.n, sampling_knobs(args), bottom_prior=bottom)
    knobs = {**sampling_knobs(args), "classes": None if labels is None else "cycled"}
    return images, labels, {"prior": args.prior, "vqvae": args.vqvae, "bottom_prior": args.bottom_prior,
                            "sampling": knobs}

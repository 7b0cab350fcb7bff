"""Measuring a set of images against a reference split: features once, then every metric.

    extractor = feature_extractor("classifier:runs/mnist-classifier/model")
    reference = reference_features(extractor, reference_images, levels=256, name="mnist/test")
    result = measure(extractor, samples, reference, labels=requested_classes)
    result["fid"], result["precision"], result["class_accuracy"]

The reference's features are extracted once and serve every set measured against it (a sweep's
points). The result names its feature extractor, the sample count and the reference split
(``features``, ``n``, ``reference``, ``reference_n``), so numbers from different features,
counts or splits are never taken for comparable.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import torch

from latentar.progress import progress_bar
from latentar.quality.features import ClassifierFeatures, Extractor
from latentar.quality.scores import K_NEAREST, inception_score, sample_scores

BATCH = 256  # images per forward pass of the feature extractor


@torch.no_grad()
def extract(extractor: Extractor, images: torch.Tensor, levels: int, *, desc: str,
            batch_size: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, C, H, W) with ``levels`` values -> (features (N, D), logits (N, K)), on the CPU,
    ``batch_size`` images a pass, with a progress bar."""
    features, logits = [], []
    for batch in progress_bar(images.split(batch_size), desc=desc, unit="batch"):
        f, g = extractor(batch, levels)
        features.append(f.float().cpu())
        logits.append(g.float().cpu())
    return torch.cat(features), torch.cat(logits)


def agreement(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of rows of ``logits`` (N, K) whose largest entry is at the class of ``labels`` (N,)."""
    if len(labels) != len(logits):
        raise ValueError(f"{len(labels)} labels for {len(logits)} images")
    return (logits.argmax(1) == labels.cpu()).float().mean().item()


class Reference(NamedTuple):
    """A reference split in one extractor's features: what every measured set is compared with."""

    images: torch.Tensor  # uint8 (N, C, H, W)
    features: torch.Tensor  # (N, D), in the features of the extractor named ``extractor``
    name: str  # the split, e.g. "mnist/test"
    levels: int  # the values the images take
    extractor: str  # the name of the extractor of ``features``


def reference_features(extractor: Extractor, images: torch.Tensor, *, levels: int, name: str,
                       batch_size: int = BATCH) -> Reference:
    """The reference split ``name``'s uint8 images (N, C, H, W) with ``levels`` values, in ``extractor``'s features."""
    features, _ = extract(extractor, images, levels, desc="features of the reference", batch_size=batch_size)
    return Reference(images, features, name, levels, extractor.name)


def measure(extractor: Extractor, images: torch.Tensor, reference: Reference, *,
            labels: torch.Tensor | None = None, classifier: ClassifierFeatures | None = None,
            k: int = K_NEAREST, batch_size: int = BATCH) -> dict[str, Any]:
    """Every metric of ``images`` (uint8 (N, C, H, W) with the reference's levels) against ``reference``
    in ``extractor``'s features: fid, kid_mean ± kid_std, precision, recall, density,
    coverage, and the Inception Score of the extractor's logits (``is_mean`` ± ``is_std``).
    With ``labels`` (the class each image was drawn for), ``class_accuracy``: the share that
    ``classifier`` (default: the extractor, when it is a classifier) puts in that class."""
    if reference.extractor != extractor.name:
        raise ValueError(f"the reference's features are {reference.extractor}'s, not {extractor.name}'s")
    if images.shape[1:] != reference.images.shape[1:]:
        raise ValueError(f"the images {tuple(images.shape[1:])} and the reference split's "
                         f"{tuple(reference.images.shape[1:])} differ in shape")
    levels = reference.levels
    fake, logits = extract(extractor, images, levels, desc="features of the images", batch_size=batch_size)
    is_mean, is_std = inception_score(logits)
    result: dict[str, Any] = {"features": extractor.name, "n": len(images), "reference": reference.name,
                              "reference_n": len(reference.images), "k": k,
                              **sample_scores(reference.features, fake, k), "is_mean": is_mean, "is_std": is_std}
    judge = classifier or (extractor if isinstance(extractor, ClassifierFeatures) else None)
    if labels is not None and judge is not None:
        judged = logits if judge is extractor else extract(judge, images, levels, desc="classify the images",
                                                           batch_size=batch_size)[1]
        result["class_accuracy"] = agreement(judged, labels)
        result["classifier"] = judge.name
    elif labels is not None:
        warnings.warn(f"no class_accuracy: the images were drawn for classes, but {extractor.name} is no "
                      "classifier; name one with --classifier PATH (latentar train-classifier makes one)",
                      stacklevel=2)
    return result

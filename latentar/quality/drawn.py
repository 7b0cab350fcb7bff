"""A prior's samples, measured: n images drawn the one way every measurement draws them (a
class-conditional prior's classes in turn, so each gets n/classes; a fixed seed), then `measure`d
against a reference. ``latentar eval-samples``, ``latentar sweep`` and a recipe's ``[metrics]`` all
measure a prior through `measure_prior`.

    reference = reference_features(extractor, test_images, levels=256, name="mnist/test")
    result = measure_prior(extractor, reference, prior, vqvae, n=1000,
                           sampling={"cfg_scale": 3.0, "temperature": 1.0, "seed": 0})
"""

from __future__ import annotations

from typing import Any

import torch

from latentar.generation import check_generation, generate
from latentar.priors.base import Prior
from latentar.priors.engine import Knobs
from latentar.progress import progress_bar
from latentar.quality.features import ClassifierFeatures, Extractor
from latentar.quality.measure import BATCH, Reference, measure
from latentar.vqvae import Tokenizer

KNOBS = ("temperature", "top_k", "top_p", "cfg_scale")  # the knobs of Prior.sample a measurement may set


def check_knobs(prior: Prior, sampling: dict[str, Any], what: str = "") -> None:
    """The knobs of ``sampling`` (`KNOBS`, each optional) must suit ``prior``, checked before any draw:
    guidance needs a class-conditional prior trained with class dropout, top-k lies in [1, K].
    ``what`` names the setting in the message (e.g. "--cfg-scale 3")."""
    knobs = Knobs(**{name: sampling[name] for name in KNOBS if name in sampling})  # each value's own range
    spec, where = prior.spec, f"{what}: " if what else ""
    if knobs.guided and not (spec.num_classes and spec.class_dropout > 0):
        raise ValueError(f"{where}cfg_scale {knobs.cfg_scale} needs a class-conditional prior trained with "
                         f"class_dropout > 0 (a learned null class); this one has num_classes={spec.num_classes}, "
                         f"class_dropout={spec.class_dropout}")
    if knobs.top_k is not None and knobs.top_k > spec.num_symbols:
        raise ValueError(f"{where}top_k {knobs.top_k} is out of range: the prior draws among "
                         f"{spec.num_symbols} symbols, so top_k must lie in [1, {spec.num_symbols}]")


def check_levels(prior: Prior, vqvae: Tokenizer | None, levels: int) -> None:
    """The images ``prior`` draws (decoded by ``vqvae``: 256 levels) must take the reference split's ``levels``."""
    drawn = 256 if vqvae is not None else prior.spec.num_symbols
    if drawn != levels:
        raise ValueError(f"the prior's images take {drawn} levels, the reference split's {levels}: "
                         f"measure against the dataset the prior learned")


def cycled_classes(prior: Prior, n: int) -> torch.Tensor | None:
    """The class of each of n draws, 0, 1, ..., classes-1, 0, ... (long (n,)); None for an unconditional prior."""
    classes = prior.spec.num_classes
    return None if classes is None else torch.arange(n) % classes


def draw_to_measure(prior: Prior, vqvae: Tokenizer | None, n: int, sampling: dict[str, Any], *,
                    bottom_prior: Prior | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(n images uint8 (n, C, H, W) on the CPU, the class each was drawn for or None), drawn with
    ``sampling`` (`generate`'s keyword arguments: the knobs, ``seed`` and ``batch_size``)."""
    check_knobs(prior, sampling)
    check_generation(prior, vqvae, n, bottom_prior, f"measuring n={n} samples")
    labels = cycled_classes(prior, n)
    drawn = generate(prior, vqvae, n, labels, bottom_prior=bottom_prior, **sampling)
    return drawn.images.cpu(), labels


def measure_prior(extractor: Extractor, reference: Reference, prior: Prior, vqvae: Tokenizer | None, n: int,
                  sampling: dict[str, Any], *, bottom_prior: Prior | None = None,
                  classifier: ClassifierFeatures | None = None, batch_size: int = BATCH) -> dict[str, Any]:
    """`measure` of n images drawn from ``prior`` (decoded by ``vqvae``) with ``sampling``; the result
    adds ``sampling``: the knobs and seed, and how the classes were chosen."""
    check_levels(prior, vqvae, reference.levels)
    images, labels = draw_to_measure(prior, vqvae, n, sampling, bottom_prior=bottom_prior)
    result = measure(extractor, images, reference, labels=labels, classifier=classifier, batch_size=batch_size)
    return {**result, "sampling": {**sampling, "classes": None if labels is None else "cycled"}}


@torch.no_grad()
def reconstructions(vqvae: Tokenizer, images: torch.Tensor, batch_size: int = BATCH) -> torch.Tensor:
    """The VQ-VAE's reconstructions of uint8 images (N, C, H, W) -> uint8 (N, C, H, W) on the CPU."""
    return torch.cat([vqvae.reconstruct(batch.to(vqvae.device)).cpu()
                      for batch in progress_bar(images.split(batch_size), desc="reconstruct", unit="batch")])

"""A recipe's ``[metrics]``: the sample metrics of its prior at the end of the run, in the
features of a dataset classifier it trains (``RUN/classifier/``, reused when finished, like every
stage), of a classifier it is given, or of Inception.

    classifier = classifier_stage(recipe, out, len(train_images))   # every process: it trains
    record = measure_run(recipe, plan, priors, vqvae, splits, classifier)   # the main process

The record (the run summary's ``metrics``) names the features, the sample count and the reference
split, and holds ``samples`` (n images drawn with [sampling]'s knobs and [metrics]'s seed, a
class-conditional prior's classes in turn; class_accuracy when conditional) and, in code mode,
``reconstructions`` (the VQ-VAE's reconstructions of the same reference images: the floor the
two-stage model can reach). The prior's model card gets them as its Sample metrics, and its
trackers as ``sample_metrics/NAME`` and ``reconstruction_metrics/NAME`` at its last update.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from accelerate import Accelerator

from latentar.config import METRICS_FEATURES, Recipe
from latentar.model_card import add_sample_metrics
from latentar.plan import Plan, sampling_device
from latentar.priors import Prior
from latentar.quality import feature_extractor, measure
from latentar.quality.drawn import measure_prior, reconstructions
from latentar.quality.features import CLASSIFIER
from latentar.quality.measure import reference_features
from latentar.run_files import MODEL_DIR
from latentar.runs.classifier import train_classifier
from latentar.runs.stages import RECIPE_RERUN, Splits
from latentar.saving import model_folder
from latentar.training import TrainConfig
from latentar.training.previews import first_images
from latentar.training.tracking import accelerator_options, end_trackers, log_record, start_trackers
from latentar.vqvae import Tokenizer

CLASSIFIER_DIR = "classifier"  # the run's classifier stage, for [metrics] features = "classifier"
CLASSIFIER_TRAIN = TrainConfig(batch_size=128, lr=2e-3, lr_schedule="cosine", log_every=50)  # but steps


def classifier_stage(recipe: Recipe, out: Path, train_items: int) -> dict | None:
    """Train (or reuse) the classifier of [metrics] features = "classifier" in ``out/classifier`` on the
    ``train_items`` training images -> its record (test accuracy, steps, reused); None when the recipe
    asks for no such classifier."""
    cfg = recipe.metrics
    if cfg.n == 0 or cfg.features != METRICS_FEATURES:
        return None
    batch = min(CLASSIFIER_TRAIN.batch_size, train_items)  # a small training set: one batch of all of it
    train = TrainConfig(**{**vars(CLASSIFIER_TRAIN), "steps": cfg.classifier_steps, "batch_size": batch})
    return train_classifier(recipe.data, out / CLASSIFIER_DIR, train, width=cfg.classifier_width,
                            subset=recipe.data.train_limit, rerun=RECIPE_RERUN)


def measure_run(recipe: Recipe, plan: Plan, priors: dict[str, Prior], vqvae: Tokenizer | None, images: Splits,
                classifier: dict | None) -> dict[str, Any]:
    """The ``metrics`` record of a run (see the module docstring), measured on ``sampling.device``."""
    cfg, device = recipe.metrics, sampling_device(recipe)
    spec = CLASSIFIER + classifier["model"] if classifier is not None else cfg.features
    if spec.startswith(CLASSIFIER):
        spec = CLASSIFIER + str(model_folder(spec.removeprefix(CLASSIFIER)))
    shown = f"{CLASSIFIER}RUN/{CLASSIFIER_DIR}" if classifier is not None else None  # the card names no local path
    extractor = feature_extractor(spec, inception_weights=cfg.inception_weights, device=device, shown=shown)
    split = images.test if cfg.reference == "test" else images.train
    name = f"{recipe.data.name}/{cfg.reference}"
    reference = reference_features(extractor, first_images(split, cfg.n), levels=plan.levels, name=name)
    knobs = recipe.sampling
    sampling = dict(temperature=knobs.temperature, top_k=knobs.top_k, top_p=knobs.top_p, cfg_scale=knobs.cfg_scale,
                    seed=cfg.seed)
    prior = priors["prior"].to(device)
    bottom = priors["bottom_prior"].to(device) if "bottom_prior" in priors else None
    record: dict[str, Any] = {"features": extractor.name, "n": cfg.n, "reference": name,
                              "reference_n": len(reference.images)}
    if classifier is not None:
        record["classifier"] = {"test_accuracy": classifier["test"]["accuracy"], "steps": classifier["step"],
                                "reused": classifier["reused"], "wall_time_s": classifier["wall_time_s"]}
    record["samples"] = measure_prior(extractor, reference, prior, None if vqvae is None else vqvae.to(device),
                                      cfg.n, sampling, bottom_prior=bottom)
    if vqvae is not None:
        record["reconstructions"] = measure(extractor, reconstructions(vqvae.to(device), reference.images), reference)
    return record


def report_metrics(record: dict[str, Any], prior_folder: Path, prior: Prior, train: TrainConfig, step: int) -> None:
    """The ``metrics`` record into the prior's model card (Sample metrics) and its trackers (at update ``step``)."""
    measured: dict[str, dict] = {name: record[name] for name in ("samples", "reconstructions") if name in record}
    add_sample_metrics(prior_folder / MODEL_DIR, measured)
    if train.report_to == "none":
        return
    accelerator = Accelerator(**accelerator_options(train.report_to, prior_folder))
    start_trackers(accelerator, prior, train, resumed_at=step)  # events after the last update: none to drop
    log_record(accelerator, {"step": step, "sample_metrics": record["samples"],
                             "reconstruction_metrics": record.get("reconstructions", {})})
    end_trackers(accelerator)

"""What a recipe runs on, learned cheaply before any work starts: `validate` checks a
`Recipe` against its dataset, its VQ-VAE, its priors (built on the meta device) and the
device it will train on, and returns the `Plan` of its stages.

    plan = validate(load_recipe("recipes/mnist-vqvae-pixelsnail.toml"))

Every failure is a `RecipeError` that names the recipe key at fault.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from accelerate.utils import parse_flag_from_env

from latentar.checks import FieldError
from latentar.config import METRICS_FEATURES, PriorConfig, Recipe, RecipeError
from latentar.data import SourceUnavailableError, load_dataset
from latentar.devices import resolve_device
from latentar.generation import check_output
from latentar.memory import MemoryCapError
from latentar.priors.base import build_prior
from latentar.quality import INCEPTION, MissingExtraError, find_inception_weights
from latentar.quality.features import CLASSIFIER
from latentar.quality.library import fidelity
from latentar.quality.scores import K_NEAREST
from latentar.registry import DATASETS, PRIORS, UnknownNameError
from latentar.saving import NotAModelError, meta_model, model_folder, read_config
from latentar.training import TrainConfig
from latentar.training.config import check_mixed_precision
from latentar.training.tracking import TrackerNotInstalledError, trackers
from latentar.vqvae import VQVAE, Palette, Tokenizer

TOKENIZERS: dict[str, type[Tokenizer]] = {"vqvae": VQVAE, "palette": Palette}  # what vqvae.path may hold, by model type


@dataclass
class Stage:
    """One prior stage: where it goes, how it is trained, and the `build_prior` arguments."""

    name: str  # "prior" or "bottom_prior": its section and its folder in the run
    config: PriorConfig
    train: TrainConfig
    build: dict  # keyword arguments of latentar.build_prior (PriorConfig.build_arguments)


@dataclass
class Plan:
    """What a recipe runs on, learned (cheaply) before any work starts."""

    image_shape: tuple[int, int, int]  # (C, H, W) of the dataset's images
    levels: int  # pixel levels: 256, or 2 when binarized
    num_classes: int | None  # None: the dataset has no labels
    grids: list[tuple[int, tuple[int, int]]]  # (K, (h, w)) of each code grid, top first; [] in pixel mode
    stages: list[Stage]  # the prior stages in training order


def validate(recipe: Recipe, device: Any = None) -> Plan:
    """Check the recipe against the data, the VQ-VAE, the priors and the ``device`` it will
    train on (default: `run_device`); raise `RecipeError` naming the key.

    Loads the test split header of the dataset (so a dataset that is neither here nor
    fetchable fails now), and builds every model on the meta device (no memory, no work).
    """
    shape, levels, num_classes = dataset_facts(recipe)
    grids = vqvae_grids(recipe, shape, levels)
    if recipe.mode == "codes" and (len(grids) == 2) != (recipe.bottom_prior is not None):
        raise RecipeError("bottom_prior: a hierarchical VQ-VAE (vqvae.hierarchical = true) needs "
                          "[bottom_prior] and [bottom_prior_train], and only it takes them")
    stages = [Stage("prior", recipe.prior, recipe.prior_train, {})]
    if recipe.bottom_prior is not None:
        assert recipe.bottom_prior_train is not None  # they go together (config.check_sections)
        stages.append(Stage("bottom_prior", recipe.bottom_prior, recipe.bottom_prior_train, {}))
    for i, stage in enumerate(stages):
        if recipe.mode == "pixels":
            grid = dict(shape=shape, num_symbols=levels)
        else:
            K, (h, w) = grids[i]
            grid = dict(shape=(1, h, w), num_symbols=K, symbols="codes")
        if i == 1:  # the bottom prior sees the top codes
            grid.update(context_symbols=grids[0][0], context_shape=grids[0][1])
        stage.build = check_stage(stage, grid, num_classes)
    device = run_device() if device is None else device
    check_training(recipe, device)
    unguided = [s.name for s in stages if s.config.class_dropout == 0]
    if recipe.sampling.cfg_scale != 1 and unguided:
        raise RecipeError(f"sampling.cfg_scale = {recipe.sampling.cfg_scale} needs a null class: set "
                          f"{unguided[0]}.class_dropout > 0 (with class_conditional = true)")
    check_sampling(recipe, stages, shape, num_classes, sampling_device(recipe))
    check_metrics(recipe, num_classes)
    return Plan(shape, levels, num_classes, grids, stages)


def dataset_facts(recipe: Recipe) -> tuple[tuple[int, int, int], int, int | None]:
    """(image shape (C, H, W), pixel levels, number of classes or None) of the recipe's
    dataset, from its test split's header."""
    data = recipe.data
    try:
        DATASETS.get(data.name)
    except UnknownNameError as e:
        raise RecipeError(f"data.name: {e}") from e
    try:
        test = load_dataset(data.name, "test", data.root, **data.options)
    except (TypeError, FieldError) as e:
        raise RecipeError(f"data.options: {e}") from e
    except (SourceUnavailableError, FileNotFoundError, OSError) as e:
        raise RecipeError(f"data.name {data.name!r} cannot be found (data.root = {data.root!r}): {e}") from e
    except ValueError as e:  # found, but unusable (bad image files, ...): the dataset's own words
        raise RecipeError(f"data {data.name!r}: {e}") from e
    return tuple(test.shape), test.num_symbols, test.num_classes


def vqvae_grids(recipe: Recipe, shape: tuple[int, int, int], levels: int) -> list[tuple[int, tuple[int, int]]]:
    """[(K, (h, w))] of the code grids of the recipe's tokenizer (a VQ-VAE built on the meta device, or
    a palette: a token per pixel), top first; [] in pixel mode."""
    if recipe.palette is not None:
        return [(recipe.palette.num_colors, shape[1:])]
    if recipe.vqvae is not None:
        try:
            return meta_model(lambda: VQVAE(shape, recipe.vqvae, levels=levels), "the VQ-VAE",
                              {"vqvae": asdict(recipe.vqvae)}).code_grids
        except (ValueError, TypeError) as e:
            raise RecipeError(f"vqvae: {e}") from e
    if recipe.vqvae_path is None:
        return []
    path = recipe.vqvae_path
    try:
        saved = read_config(path)
    except NotAModelError as e:
        raise RecipeError(f"vqvae.path: {e}") from e
    if saved["model_type"] not in TOKENIZERS:
        raise RecipeError(f"vqvae.path {path} holds a {saved['model_type']}, not a VQ-VAE or a palette")
    try:
        tokenizer = TOKENIZERS[saved["model_type"]]
        vqvae = meta_model(lambda: tokenizer.from_config(saved["config"]), "it", {"config": saved["config"]})
    except (ValueError, TypeError) as e:
        raise RecipeError(f"vqvae.path {path}: {e}") from e
    if (vqvae.image_shape, vqvae.levels) != (shape, levels):
        raise RecipeError(f"vqvae.path {path} encodes {vqvae.image_shape} images with {vqvae.levels} "
                          f"levels, but data.name {recipe.data.name!r} has {shape} with {levels}")
    return vqvae.code_grids


def check_stage(stage: Stage, grid: dict, num_classes: int | None) -> dict:
    """The `build_prior` arguments of one prior stage on the symbol ``grid`` (`PriorConfig.build_arguments`),
    checked by building the prior on the meta device."""
    try:
        build = stage.config.build_arguments(grid, num_classes, stage.train.prior_augmentations)
        with torch.device("meta"):
            build_prior(**build)
    except UnknownNameError as e:
        raise RecipeError(f"{stage.name}: {e}") from e
    except (ValueError, TypeError) as e:
        hint = " (see the prior's arch keys)" if "argument" in str(e) else ""
        raise RecipeError(f"{stage.name}: {e}{hint}") from e
    return build


def check_sampling(recipe: Recipe, stages: list[Stage], image_shape: tuple[int, int, int], num_classes: int | None,
                   device: Any) -> None:
    """The sample grid a run draws at its end (``sampling.n`` images, or ``sampling.per_class`` per
    class from a class-conditional prior) must fit the memory cap of ``device`` (``sampling.device``)
    next to the work of drawing one (``generation.check_output`` on the priors built on the meta
    device), before any stage trains."""
    cfg = recipe.sampling
    if recipe.prior.class_conditional:
        assert num_classes is not None  # check_stage refused a class-conditional prior on unlabelled data
        n, key = num_classes * cfg.per_class, f"sampling.per_class = {cfg.per_class} (× {num_classes} classes)"
    else:
        n, key = cfg.n, f"sampling.n = {cfg.n}"
    with torch.device("meta"):
        priors = [build_prior(**stage.build) for stage in stages]
    try:
        check_output(n, priors, image_shape, key, device)
    except MemoryCapError as e:
        raise RecipeError(str(e)) from e


def check_metrics(recipe: Recipe, num_classes: int | None) -> None:
    """[metrics] (when ``n`` > 0) needs the metrics extra, enough samples for the k-NN balls, and features
    that can be had: a dataset with classes to train a classifier on, a saved classifier, or the Inception weights."""
    cfg = recipe.metrics
    if cfg.n == 0:
        return
    if cfg.n <= K_NEAREST:
        raise RecipeError(f"metrics.n = {cfg.n}: precision/recall and density/coverage need more than k = {K_NEAREST} "
                          "samples (k-NN balls); set metrics.n >= 100 or so, or 0 to turn the metrics off")
    try:
        fidelity("metric_fid")
    except MissingExtraError as e:
        raise RecipeError(f"[metrics]: {e}") from e
    if cfg.features == METRICS_FEATURES:
        if not num_classes or num_classes < 2:
            raise RecipeError(f"metrics.features = {METRICS_FEATURES!r} trains a classifier on the data's labels, but "
                              f"data.name {recipe.data.name!r} has {num_classes or 'no'} class(es); use "
                              f"{INCEPTION!r} or 'classifier:PATH'")
    elif cfg.features.startswith(CLASSIFIER) and cfg.features != CLASSIFIER:
        location = cfg.features.removeprefix(CLASSIFIER)
        try:
            saved = read_config(model_folder(location))
        except NotAModelError as e:
            raise RecipeError(f"metrics.features: {e}") from e
        if saved["model_type"] != "classifier":
            raise RecipeError(f"metrics.features: {location} holds a {saved['model_type']}, not a classifier "
                              "(latentar train-classifier makes one)")
    elif cfg.features == INCEPTION:
        try:
            find_inception_weights(cfg.inception_weights)
        except FileNotFoundError as e:
            raise RecipeError(f"metrics.features = {INCEPTION!r}: {e}") from e
    else:
        raise RecipeError(f"metrics.features must be {METRICS_FEATURES!r} (trained by the run), 'classifier:PATH' "
                          f"or {INCEPTION!r}, got {cfg.features!r}")


def sampling_device(recipe: Recipe) -> torch.device:
    """The device of ``sampling.device`` (`latentar.devices.resolve_device`), checked to be on this machine."""
    try:
        return resolve_device(recipe.sampling.device)
    except ValueError as e:
        raise RecipeError(f"sampling.device: {e}") from e


def training_sections(recipe: Recipe) -> dict[str, TrainConfig]:
    """The recipe's ``*_train`` sections that are present, by name."""
    names = ("vqvae_train", "prior_train", "bottom_prior_train")
    return {name: getattr(recipe, name) for name in names if getattr(recipe, name) is not None}


def check_training(recipe: Recipe, device: Any) -> None:
    """Each training section must suit the device (``mixed_precision``), the data
    (``data.train_limit`` holds at least one batch) and this machine (the packages of its
    ``report_to`` trackers); a VQ-VAE-2's top codes cannot be previewed alone."""
    limit = recipe.data.train_limit
    if recipe.bottom_prior is not None and recipe.prior_train.sample_every:
        raise RecipeError("prior_train.sample_every: the top codes of a VQ-VAE-2 cannot be decoded without the "
                          "bottom ones; set bottom_prior_train.sample_every, whose grids draw both levels")
    for name, train in training_sections(recipe).items():
        try:
            check_mixed_precision(train.mixed_precision, device)
        except ValueError as e:
            raise RecipeError(f"{name}.mixed_precision: {e}") from e
        try:
            trackers(train.report_to)
        except TrackerNotInstalledError as e:
            raise RecipeError(f"{name}.report_to: {e}") from e
        check_speed_settings(recipe, name, train)
        if limit is not None and limit < train.batch_size:
            raise RecipeError(f"data.train_limit = {limit} holds no whole batch of {name}.batch_size = "
                              f"{train.batch_size}; expected a train_limit >= the batch size")


def check_speed_settings(recipe: Recipe, name: str, train: TrainConfig) -> None:
    """``compile``, ``checkpoint_activations`` and ``channels_last`` are prior settings; checkpointing needs a prior
    whose network supports it."""
    if name == "vqvae_train":
        for key in ("compile", "checkpoint_activations", "channels_last"):
            if getattr(train, key):
                raise RecipeError(f"vqvae_train.{key}: applies to priors only; set it in prior_train")
        return
    prior = recipe.prior if name == "prior_train" else recipe.bottom_prior
    assert prior is not None  # [bottom_prior_train] comes with [bottom_prior] (config.check_sections)
    known = prior.name in PRIORS.names()  # an unknown name is reported with the prior's section
    if train.checkpoint_activations and known and not PRIORS.get(prior.name).checkpointable:
        raise RecipeError(f"{name}.checkpoint_activations: prior {prior.name!r} does not support it; "
                          f"priors that do: {[n for n in PRIORS.names() if PRIORS.get(n).checkpointable]}")


def run_device():
    """The device a run trains on: CUDA where there is one (unless ACCELERATE_USE_CPU is set), else the CPU."""
    use_cuda = torch.cuda.is_available() and not parse_flag_from_env("ACCELERATE_USE_CPU")
    return torch.device("cuda" if use_cuda else "cpu")

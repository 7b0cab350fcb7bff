"""A stage is one model made from data: a VQ-VAE (`vqvae_stage`) or a colour palette (`palette_stage`),
the code grids of a dataset (`codes_stage`) or a prior (`prior_stage`). Each is built, trained or reused, and summarised
here and only here: ``latentar run`` chains the stages of a recipe (`latentar.runs.recipe`),
``train-vqvae``, ``encode`` and ``train-prior`` run one each (`latentar.runs.single`).

A trained stage writes the trainer's files into its folder and then its stage record
(``summary.json``, see `latentar.runs.summary`); `Rerun` says what happens to a folder that
already holds the stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple, TypeVar, cast

import torch
from accelerate import PartialState
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import Dataset

from latentar.config import PriorConfig
from latentar.data.codes import encode_dataset, write_codes_source
from latentar.data.subsets import dataset_attribute, dataset_size
from latentar.evaluation import evaluate_prior, evaluate_vqvae
from latentar.files import atomic_write_json, read_json
from latentar.model_card import point_card_at
from latentar.priors import Prior, build_prior
from latentar.run_files import MODEL_DIR, SUMMARY_FILE, read_done
from latentar.runs.summary import FORMAT, prior_description, recorded_wall_time, stage_record, vqvae_description
from latentar.saving import CONFIG_FILE, load
from latentar.training import TrainConfig, Trainer, prior_objective_of, vqvae_objective
from latentar.training.previews import first_images, reconstruction_preview, sample_preview
from latentar.vqvae import VQVAE, Palette, PaletteConfig, Tokenizer, VQVAEConfig


class Splits(NamedTuple):
    """The data of a stage: what it is called (summaries, model cards) and its two splits."""

    name: str  # a dataset's name, or the code folder a one-stage prior learns
    train: Dataset  # items (uint8 images (C, H, W), label) or (long codes (1, h, w), label[, context])
    test: Dataset


class Rerun(NamedTuple):
    """What a stage does with a folder that already holds it: ``reuse`` a finished stage as it is
    (``latentar run``), else train, continuing from the newest checkpoint with ``resume`` or
    starting afresh with ``overwrite`` (see ``Trainer.fit``)."""

    reuse: bool = False
    resume: bool = False
    overwrite: bool = False


FRESH = Rerun()  # a one-stage run's default: a folder holding an earlier run is refused
RECIPE_RERUN = Rerun(reuse=True, resume=True)  # a recipe reuses finished stages and resumes the others

M = TypeVar("M", bound=nn.Module)  # the model a stage makes: a VQ-VAE or a prior


def train_stage(folder: Path, stage: str, build: Callable[[], M], objective, data: Splits,
                config: TrainConfig, *, evaluate, preview, rerun: Rerun,
                describe: Callable[[M], dict]) -> tuple[M, dict]:
    """Reuse a finished stage (with ``rerun.reuse``) or train ``build()`` on ``data`` in ``folder``
    -> (the model in eval mode, its stage record). ``describe(model)`` says what the model is;
    a stage trained here writes its record to ``folder/summary.json`` (main process)."""
    done = read_done(folder) if rerun.reuse else None
    if done is not None:
        model = load(folder / MODEL_DIR).eval()
        return model, stage_record(stage, data.name, model, done, train_items=dataset_size(data.train), reused=True,
                                   wall_time_s=recorded_wall_time(folder), **describe(model))
    tic = time.perf_counter()
    set_seed(config.seed)  # the initial weights
    trainer = Trainer(build(), objective, data.train, config, folder, evaluate=evaluate, preview=preview,
                      dataset=data.name, overwrite=rerun.overwrite)
    result = trainer.fit(resume=rerun.resume)
    model = cast(M, trainer.final_model().eval())  # build()'s model, or its EMA copy: an M
    record = stage_record(stage, data.name, model, result, train_items=dataset_size(data.train), reused=False,
                          wall_time_s=time.perf_counter() - tic, **describe(model))
    if trainer.accelerator.is_main_process:
        atomic_write_json(folder / SUMMARY_FILE, record)
    return model, record


def vqvae_stage(folder: Path, data: Splits, config: VQVAEConfig, train: TrainConfig, *, shown: int, nrow: int,
                rerun: Rerun, eval_batch_size: int = 256) -> tuple[VQVAE, dict]:
    """A VQ-VAE of ``config`` for the images of ``data`` -> (it, its record); its previews
    (``train.sample_every``) are the reconstructions of the first ``shown`` test images, ``nrow`` a row."""
    def evaluate(model, accelerator):
        return evaluate_vqvae(model, data.test, accelerator, batch_size=eval_batch_size)

    if train.augment:
        raise ValueError(f"augment = {list(train.augment)} is distribution augmentation for prior training; "
                         "a VQ-VAE's training takes none")
    shape, levels = (dataset_attribute(data.train, key) for key in ("shape", "num_symbols"))
    preview = reconstruction_preview(first_images(data.test, shown), nrow) if train.sample_every else None
    return train_stage(folder, "vqvae", lambda: VQVAE(shape, config, levels=levels), vqvae_objective, data, train,
                       evaluate=evaluate, preview=preview, rerun=rerun, describe=vqvae_description)


def given_vqvae(path: str, data: Splits, device: torch.device | str = "cpu") -> tuple[Tokenizer, dict]:
    """The trained VQ-VAE (or fitted palette) in ``path`` (a recipe's vqvae.path), scored on ``device``
    -> (it, its record: scored, not trained)."""
    vqvae = Tokenizer.from_pretrained(path, device).eval()
    scores = evaluate_vqvae(vqvae, data.test)
    return vqvae, {"format": FORMAT, "stage": vqvae.model_type, "data": data.name, **vqvae_description(vqvae),
                   "path": path, "reused": True, "parameters": sum(p.numel() for p in vqvae.parameters()),
                   "test": scores, **scores, "wall_time_s": 0.0}


def palette_stage(folder: Path, data: Splits, config: PaletteConfig, *, reuse: bool) -> tuple[Palette, dict]:
    """A colour palette of ``config`` fitted to the training images of ``data`` (the one a finished
    stage in ``folder`` holds, with ``reuse``) -> (it, its record: its test split scored as
    `evaluate_vqvae` scores a VQ-VAE, PSNR and colour usage). It fits on ``fit_images``; every process
    fits the same palette (seeded), the main one writes ``folder/model/`` and then ``summary.json``."""
    if reuse and (folder / SUMMARY_FILE).is_file() and (folder / MODEL_DIR / CONFIG_FILE).is_file():
        return Palette.from_pretrained(folder / MODEL_DIR).eval(), {**read_json(folder / SUMMARY_FILE), "reused": True}
    tic = time.perf_counter()
    levels = dataset_attribute(data.train, "num_symbols")
    palette = Palette(**asdict(config), levels=levels).fit(fit_images(data.train, config.fit_pixels, config.seed))
    scores = evaluate_vqvae(palette, data.test)
    record = {"format": FORMAT, "stage": "palette", "data": data.name, **vqvae_description(palette), "reused": False,
              "parameters": 0, "steps": 0, "train_items": dataset_size(data.train), "test": scores, **scores,
              "wall_time_s": time.perf_counter() - tic}
    if PartialState().is_main_process:
        palette.save(folder / MODEL_DIR)
        atomic_write_json(folder / SUMMARY_FILE, record)
    return palette, record


def fit_images(images: Dataset, pixels: int, seed: int) -> torch.Tensor:
    """The training images a palette fits on: enough of them, drawn at random (``seed``), to hold
    ``pixels`` pixels (all of them when the split holds fewer) -> uint8 (n, C, H, W)."""
    count, (_, H, W) = dataset_size(images), dataset_attribute(images, "shape")
    n = min(count, -(-pixels // (H * W)))
    picks = torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return torch.stack([images[int(i)][0] for i in picks])


def codes_stage(vqvae: Tokenizer, splits: Mapping[str, Dataset], folder: Path, source: str, *,
                batch_size: int = 256, processes: PartialState | None = None) -> dict:
    """Encode ``splits`` ({split: image dataset}) of dataset ``source`` into ``folder`` (a split this
    VQ-VAE already encoded there is kept) -> the stage record, also written to ``folder/summary.json``
    (by the main one of ``processes``, which share the work: `encode_dataset`)."""
    tic = time.perf_counter()
    for split, images in splits.items():
        manifest = encode_dataset(vqvae, images, folder, split, source=source, batch_size=batch_size,
                                  processes=processes)
    record = {"format": FORMAT, "stage": "codes", "data": source, "folder": str(folder),
              "vqvae_fingerprint": manifest["vqvae_fingerprint"], "grids": manifest["grids"],
              "counts": {split: entry["count"] for split, entry in manifest["splits"].items()},
              "wall_time_s": time.perf_counter() - tic}
    if processes is None or processes.is_main_process:
        atomic_write_json(folder / SUMMARY_FILE, record)
    return record


def prior_stage(folder: Path, data: Splits, config: PriorConfig, build: dict, train: TrainConfig, *,
                vqvae: Tokenizer | None = None, source: tuple[str, str, str] | None = None,
                top_prior: Prior | None = None, rerun: Rerun, eval_batch_size: int = 256) -> tuple[Prior, dict]:
    """The prior ``build_prior(**build)`` (``config``'s `PriorConfig.build_arguments`) on ``data``
    -> (it, its record). A code prior's previews decode with ``vqvae`` (a VQ-VAE-2's bottom prior
    draws under ``top_prior``'s codes), and its model folder records ``source``: the fingerprint,
    level and model type of the VQ-VAE (or palette) whose codes it learned."""
    def evaluate(model, accelerator):
        return evaluate_prior(model, data.test, accelerator, batch_size=eval_batch_size)

    levels = vqvae.levels if vqvae is not None else dataset_attribute(data.train, "num_symbols")
    preview = sample_preview(vqvae, levels=levels, top_prior=top_prior) if train.sample_every else None
    prior, record = train_stage(folder, "prior", lambda: build_prior(**build), prior_objective_of(train), data,
                                train, evaluate=evaluate, preview=preview, rerun=rerun,
                                describe=lambda model: prior_description(config, train))
    if source is not None and PartialState().is_main_process:
        write_codes_source(folder / MODEL_DIR, *source)
        point_card_at(folder / MODEL_DIR)  # the card's Use section names the VQ-VAE of its codes
    return prior, record

"""One model on its own: train a prior (``latentar train-prior``) or a VQ-VAE
(``latentar train-vqvae``) on a dataset and score it, or encode a dataset with a VQ-VAE
(``latentar encode``). A recipe chains these stages (``latentar.pipeline``).

    summary = train_prior("binarized_mnist", "pixelcnn", "runs/bmnist", TrainConfig(steps=2000),
                          preset="small")
    summary["test"]["bits_per_dim"]
    summary = train_vqvae("mnist", "runs/mnist-vqvae", TrainConfig(steps=1000, batch_size=128),
                          VQVAE.make_config("mnist"))
    summary["test"]["psnr"], summary["test"]["perplexity"]
    encode_splits("runs/mnist-vqvae/model", "mnist", "runs/mnist-codes")

A run folder is the trainer's (metrics.jsonl, checkpoints/, model/, done.json) plus
``summary.json`` (the test scores); a VQ-VAE run adds ``reconstructions.png`` (rows of
test images, each above its reconstructions).
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate.utils import set_seed
from torch.utils.data import Dataset

from latentar.data import first_items, open_dataset
from latentar.data.codes import CodeDataset, check_codes_match, encode_dataset, write_codes_source
from latentar.evaluation import evaluate_prior, evaluate_vqvae
from latentar.priors import Prior, build_prior
from latentar.registry import PRIORS
from latentar.saving import meta_model
from latentar.generation import check_pair
from latentar.files import atomic_write_json
from latentar.training import TrainConfig, Trainer, prior_objective, vqvae_objective
from latentar.training.previews import first_images, reconstruction_preview, sample_preview, save_reconstructions
from latentar.training.trainer import MODEL_DIR
from latentar.vqvae import VQVAE, VQVAEConfig

SUMMARY_FILE = "summary.json"
GRID_FILE = "reconstructions.png"
SPLITS = ("train", "test")


def prior_for(dataset: Dataset, name: str, *, head: str = "categorical", preset: str | None = None,
              class_conditional: bool = False, class_dropout: float = 0.0, arch: dict | None = None) -> Prior:
    """Build prior ``name`` for the symbols of ``dataset`` (its shape, num_symbols, num_classes,
    and for code datasets its ``symbols`` kind and spatial context, when it has them)."""
    num_classes = None
    if class_conditional:
        num_classes = dataset.num_classes
        if num_classes is None:
            raise ValueError("class_conditional needs a dataset with labels; this one has num_classes None")
    context = {key: getattr(dataset, key) for key in ("symbols", "context_symbols", "context_shape")
               if getattr(dataset, key, None) is not None}
    return build_prior(name, dataset.shape, dataset.num_symbols, head, num_classes, preset=preset,
                       class_dropout=class_dropout, **context, **(arch or {}))


def train_prior(data: str, prior: str, out_dir: str | Path, config: TrainConfig, *,
                head: str = "categorical", preset: str | None = None, arch: dict | None = None,
                class_conditional: bool = False, class_dropout: float = 0.0, subset: int | None = None,
                data_root: str | Path | None = None, resume: bool = False, overwrite: bool = False,
                eval_batch_size: int = 256, level: str | None = None, vqvae: str | Path | None = None) -> dict:
    """Train, evaluate the test split, write ``out_dir/summary.json`` and return the summary.

    ``subset`` keeps the first N training images (quick runs). The test split is scored
    every ``config.eval_every`` updates and at the end. With code grids (``data`` a code
    folder, ``level`` for VQ-VAE-2), the exported model records the VQ-VAE that made them.
    ``resume`` continues the run in ``out_dir``, ``overwrite`` replaces it (see ``Trainer.fit``).
    ``config.sample_every`` previews draws as training goes; a code prior decodes them with
    ``vqvae``, the folder of the VQ-VAE that made the codes.
    """
    tic = time.perf_counter()
    PRIORS.get(prior)  # an unknown name fails before any data is read
    set_seed(config.seed)  # the initial weights
    train, test = (open_dataset(data, split, data_root, level=level) for split in SPLITS)
    source = (train.fingerprint, train.level) if isinstance(train, CodeDataset) else None  # the VQ-VAE, its level
    model = prior_for(train, prior, head=head, preset=preset, class_conditional=class_conditional,
                      class_dropout=class_dropout, arch=arch)
    preview = prior_preview(model, train, vqvae) if config.sample_every else None
    train = first_items(train, subset)

    def evaluate(model, accelerator):
        return evaluate_prior(model, test, accelerator, batch_size=eval_batch_size)

    trainer = Trainer(model, prior_objective, train, config, out_dir, evaluate=evaluate, overwrite=overwrite,
                      preview=preview, dataset=data)
    result = trainer.fit(resume=resume)
    summary = {"data": data, "prior": prior, "preset": preset, "head": head, "arch": arch or {},
               "class_conditional": class_conditional, "class_dropout": class_dropout, "train_items": len(train),
               "parameters": sum(p.numel() for p in model.parameters()), "steps": result["step"],
               "ema": config.ema_decay is not None, "train": result["train"], "test": result["eval"],
               "wall_time_s": time.perf_counter() - tic}
    if trainer.accelerator.is_main_process:
        atomic_write_json(Path(out_dir) / SUMMARY_FILE, summary)
        if source is not None:
            write_codes_source(Path(out_dir) / MODEL_DIR, *source)
    return summary


def train_vqvae(data: str, out_dir: str | Path, config: TrainConfig, vqvae: VQVAEConfig, *,
                data_root: str | Path | None = None, subset: int | None = None, resume: bool = False,
                overwrite: bool = False, eval_batch_size: int = 256, grid_images: int = 32, nrow: int = 8) -> dict:
    """Train a VQ-VAE on dataset ``data``, score the test split, write summary.json and the
    reconstruction grid into ``out_dir``; returns the summary. ``subset`` keeps the first
    N training images; ``resume`` continues the run in ``out_dir``, ``overwrite`` replaces it.
    ``config.sample_every`` previews the reconstruction grid as training goes."""
    tic = time.perf_counter()
    set_seed(config.seed)  # the initial weights
    train, test = (open_dataset(data, split, data_root) for split in SPLITS)
    build = functools.partial(VQVAE, train.shape, vqvae, levels=train.num_symbols)
    meta_model(build, "the VQ-VAE", {"vqvae": asdict(vqvae)})  # sizes checked before a real build
    model = build()
    train = first_items(train, subset)
    originals = first_images(test, grid_images)  # (n, C, H, W)

    def evaluate(model, accelerator):
        return evaluate_vqvae(model, test, accelerator, batch_size=eval_batch_size)

    preview = reconstruction_preview(originals, nrow) if config.sample_every else None
    trainer = Trainer(model, vqvae_objective, train, config, out_dir, evaluate=evaluate, overwrite=overwrite,
                      preview=preview, dataset=data)
    result = trainer.fit(resume=resume)
    final = trainer.final_model()
    summary = {"data": data, "image_shape": list(final.image_shape), "vqvae": asdict(final.config),
               "grids": {level: list(shape) for level, shape in final.grid_shapes.items()},
               "fingerprint": final.fingerprint(), "train_items": len(train),
               "parameters": sum(p.numel() for p in final.parameters()), "steps": result["step"],
               "train": result["train"], "test": result["eval"], "wall_time_s": time.perf_counter() - tic}
    if trainer.accelerator.is_main_process:
        atomic_write_json(Path(out_dir) / SUMMARY_FILE, summary)
        save_reconstructions(final, originals, Path(out_dir) / GRID_FILE, nrow=nrow)
    return summary


def prior_preview(prior: Prior, train: Dataset, vqvae_dir: str | Path | None):
    """The ``sample_preview`` of ``prior`` trained on ``train``: pixels as they are, codes decoded by
    the VQ-VAE in ``vqvae_dir``, which must be the one that made them."""
    vqvae = None if vqvae_dir is None else VQVAE.from_pretrained(vqvae_dir).eval()
    if vqvae is not None and isinstance(train, CodeDataset):
        check_codes_match(vqvae, train.manifest)
    check_pair(prior, vqvae)  # a code prior needs the VQ-VAE of its codes, a pixel prior none
    return sample_preview(vqvae, levels=train.num_symbols if vqvae is None else vqvae.levels)


def encode_splits(vqvae_dir: str | Path, data: str, out_dir: str | Path, *, data_root: str | Path | None = None,
                  batch_size: int = 256, splits: tuple[str, ...] = SPLITS) -> dict:
    """Encode the ``splits`` of dataset ``data`` with the VQ-VAE saved in ``vqvae_dir``; returns the manifest."""
    vqvae = VQVAE.from_pretrained(vqvae_dir).eval()
    if torch.cuda.is_available():
        vqvae.cuda()
    manifest = {}
    for split in splits:
        dataset = open_dataset(data, split, data_root)
        manifest = encode_dataset(vqvae, dataset, out_dir, split, source=data, batch_size=batch_size)
    return manifest

"""One stage on its own: ``latentar train-vqvae``, ``fit-palette``, ``encode`` and ``train-prior`` run the same
stage code as ``latentar run`` (`latentar.runs.stages`), on a dataset named on the command line.

    record = train_prior(DataConfig("binarized_mnist"), PriorConfig("pixelcnn", preset="small"),
                         "runs/bmnist", TrainConfig(steps=2000))
    record["test"]["bits_per_dim"]
    record = train_vqvae(DataConfig("mnist"), VQVAE.make_config("mnist"), "runs/mnist-vqvae",
                         TrainConfig(steps=1000, batch_size=128))
    record["test"]["psnr"], record["test"]["perplexity"]
    encode_splits("runs/mnist-vqvae/model", DataConfig("mnist"), "runs/mnist-codes")

Each returns the stage record it writes to ``summary.json`` (`latentar.runs.summary`);
train-vqvae and fit-palette add ``reconstructions.png`` (rows of test images, each above its reconstructions).
Unlike a recipe, a one-stage run never reuses its folder silently: ``rerun`` asks to resume or
overwrite (`Rerun`).
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import PartialState
from torch.utils.data import Dataset

from latentar.config import DataConfig, PriorConfig
from latentar.data import first_items, load_dataset
from latentar.data.catalog import SPLITS, SymbolDataset
from latentar.data.codes import CodeDataset, check_codes_match
from latentar.generation import check_pair
from latentar.priors import build_prior
from latentar.registry import PRIORS
from latentar.run_files import RECONSTRUCTIONS_FILE, SUMMARY_FILE
from latentar.runs.stages import FRESH, Rerun, Splits, codes_stage, palette_stage, prior_stage, vqvae_stage
from latentar.saving import meta_model
from latentar.training import RunFolderError, TrainConfig
from latentar.training.previews import first_images, save_reconstructions
from latentar.vqvae import VQVAE, PaletteConfig, Tokenizer, VQVAEConfig


def open_splits(data: DataConfig, level: str | None = None) -> tuple[SymbolDataset, Dataset]:
    """(train, test) of ``data``: a dataset, or a folder of code grids (at ``level`` for a VQ-VAE-2);
    the test split cut to its first ``data.test_limit`` items (the whole split when it has fewer)."""
    train, test = (load_dataset(data.name, split, data.root, level=level, **data.options) for split in SPLITS)
    return train, first_items(test, data.test_limit, at_most=True)


def train_prior(data: DataConfig, prior: PriorConfig, out_dir: str | Path, config: TrainConfig, *,
                subset: int | None = None, level: str | None = None, vqvae: str | Path | None = None,
                rerun: Rerun = FRESH, eval_batch_size: int = 256) -> dict:
    """Train ``prior`` on ``data`` (a dataset, or code grids: a code folder, ``level`` for a VQ-VAE-2)
    into ``out_dir``, scoring the test split every ``config.eval_every`` updates and at the end;
    returns its stage record. ``subset`` keeps the first N training items, ``data.test_limit`` the first
    N test items (the whole split when it has fewer). A code prior records the
    VQ-VAE that made its codes; its previews (``config.sample_every``) decode with ``vqvae``, that
    VQ-VAE's folder."""
    PRIORS.get(prior.name)  # an unknown name fails before any data is read
    train, test = open_splits(data, level)
    build = prior.build_arguments(symbol_grid(train), train.num_classes, config.prior_augmentations)
    decoder = preview_decoder(build, train, vqvae) if config.sample_every else None
    source = (train.fingerprint, train.level, train.tokenizer) if isinstance(train, CodeDataset) else None
    _, record = prior_stage(Path(out_dir), Splits(data.name, first_items(train, subset), test), prior, build, config,
                            vqvae=decoder, source=source, rerun=rerun, eval_batch_size=eval_batch_size)
    return record


def symbol_grid(dataset: SymbolDataset) -> dict:
    """The symbol grid of a dataset, as `PriorConfig.build_arguments` takes it: shape (C, H, W),
    num_symbols, and for code grids their kind and spatial context."""
    grid = {"shape": tuple(dataset.shape), "num_symbols": dataset.num_symbols}
    return grid | {key: getattr(dataset, key) for key in ("symbols", "context_symbols", "context_shape")
                   if getattr(dataset, key, None) is not None}


def preview_decoder(build: dict, train: Dataset, vqvae_dir: str | Path | None) -> Tokenizer | None:
    """The VQ-VAE in ``vqvae_dir`` that decodes the previews of the prior ``build_prior(**build)``,
    checked to be the one that made the codes of ``train``; None (no folder) for a pixel prior."""
    vqvae = None if vqvae_dir is None else Tokenizer.from_pretrained(vqvae_dir).eval()
    if vqvae is not None and isinstance(train, CodeDataset):
        check_codes_match(vqvae, train.manifest)
    with torch.device("meta"):  # the prior's spec, built without weights
        check_pair(build_prior(**build), vqvae)  # a code prior needs the VQ-VAE of its codes, a pixel prior none
    return vqvae


def train_vqvae(data: DataConfig, vqvae: VQVAEConfig, out_dir: str | Path, config: TrainConfig, *,
                subset: int | None = None, rerun: Rerun = FRESH, eval_batch_size: int = 256,
                grid_images: int = 32, nrow: int = 8) -> dict:
    """Train a VQ-VAE of ``vqvae`` on ``data`` into ``out_dir``, score the test split and draw
    ``reconstructions.png`` (the first ``grid_images`` test images, ``nrow`` a row, also the previews
    of ``config.sample_every``); returns its stage record. ``subset`` keeps the first N training images,
    ``data.test_limit`` the first N test images."""
    train, test = open_splits(data)
    build = functools.partial(VQVAE, train.shape, vqvae, levels=train.num_symbols)
    meta_model(build, "the VQ-VAE", {"vqvae": asdict(vqvae)})  # sizes checked before a real build
    model, record = vqvae_stage(Path(out_dir), Splits(data.name, first_items(train, subset), test), vqvae, config,
                                shown=grid_images, nrow=nrow, rerun=rerun, eval_batch_size=eval_batch_size)
    if PartialState().is_main_process:
        save_reconstructions(model, first_images(test, grid_images), Path(out_dir) / RECONSTRUCTIONS_FILE, nrow=nrow)
    return record


def fit_palette(data: DataConfig, palette: PaletteConfig, out_dir: str | Path, *, overwrite: bool = False,
                grid_images: int = 32, nrow: int = 8) -> dict:
    """Fit a colour palette of ``palette`` to the training images of ``data`` into ``out_dir`` (`palette_stage`:
    ``model/`` and ``summary.json``), score the test split and draw ``reconstructions.png`` (the first
    ``grid_images`` test images, ``nrow`` a row); returns its stage record. A folder that already holds a
    palette is refused unless ``overwrite``."""
    folder = Path(out_dir)
    if (folder / SUMMARY_FILE).exists() and not overwrite:
        raise RunFolderError(f"{folder} already holds a stage ({SUMMARY_FILE}); choose another folder, or "
                             "overwrite it (overwrite=True, --overwrite)")
    train, test = open_splits(data)
    model, record = palette_stage(folder, Splits(data.name, train, test), palette, reuse=False)
    if PartialState().is_main_process:
        save_reconstructions(model, first_images(test, grid_images), folder / RECONSTRUCTIONS_FILE, nrow=nrow)
    return record


def encode_splits(vqvae_dir: str | Path, data: DataConfig, out_dir: str | Path, *, batch_size: int = 256,
                  splits: tuple[str, ...] = SPLITS, device: str | torch.device = "auto",
                  processes: PartialState | None = None) -> dict:
    """Encode the ``splits`` of ``data`` with the VQ-VAE saved in ``vqvae_dir``, run on ``device``, into
    ``out_dir`` (``processes`` share the work); returns the stage record (the manifest's fingerprint,
    grids and counts)."""
    vqvae = Tokenizer.from_pretrained(vqvae_dir, device).eval()
    images = {split: load_dataset(data.name, split, data.root, **data.options) for split in splits}
    return codes_stage(vqvae, images, Path(out_dir), data.name, batch_size=batch_size, processes=processes)

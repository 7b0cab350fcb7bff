"""Train one prior on a dataset and score it on the test split (``latentar train-prior``).

    summary = train_prior("binarized_mnist", "pixelcnn", "runs/bmnist", TrainConfig(steps=2000),
                          preset="small")
    summary["test"]["bits_per_dim"]
"""

from __future__ import annotations

from pathlib import Path

from accelerate.utils import set_seed
from torch.utils.data import Dataset, Subset

from latentar.data import load_dataset
from latentar.data.codes import MANIFEST, CodeDataset
from latentar.evaluation import evaluate_prior
from latentar.priors import Prior, build_prior
from latentar.registry import DATASETS, PRIORS
from latentar.saving import atomic_write_json
from latentar.training.config import TrainConfig
from latentar.training.objectives import prior_objective
from latentar.sampling import write_codes_source
from latentar.training.trainer import MODEL_DIR, Trainer

SUMMARY_FILE = "summary.json"


def open_dataset(data: str, split: str, data_root: str | Path | None = None, *,
                 level: str | None = None) -> Dataset:
    """A split of the dataset registered as ``data`` (see ``latentar.data``), or of the code
    grids in folder ``data`` (made by ``latentar encode``): ``level`` picks a VQ-VAE-2 level,
    and the bottom level comes with the top codes as its spatial context."""
    if data not in DATASETS and Path(data).is_dir():
        if (Path(data) / MANIFEST).is_file():
            return CodeDataset(data, split, level, context="top" if level == "bottom" else None)
        raise ValueError(f"{data} is a folder without {MANIFEST}, so neither code grids nor a dataset name; "
                         f"known datasets: {', '.join(DATASETS.names())}")
    if level is not None:
        raise ValueError(f"level={level!r} picks a level of code grids, but {data} is an image dataset")
    return load_dataset(data, split, data_root)


def first_items(dataset: Dataset, subset: int | None) -> Dataset:
    """The first ``subset`` items of ``dataset`` (all of it for None); quick runs train on these."""
    if subset is None:
        return dataset
    if not 1 <= subset <= len(dataset):
        raise ValueError(f"subset must be in [1, {len(dataset)}] (the training set's size), got {subset}")
    return Subset(dataset, range(subset))


def prior_for(dataset: Dataset, name: str, *, head: str = "categorical", preset: str | None = None,
              class_conditional: bool = False, arch: dict | None = None) -> Prior:
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
                       **context, **(arch or {}))


def train_prior(data: str, prior: str, out_dir: str | Path, config: TrainConfig, *,
                head: str = "categorical", preset: str | None = None, arch: dict | None = None,
                class_conditional: bool = False, subset: int | None = None,
                data_root: str | Path | None = None, resume: bool = False, overwrite: bool = False,
                eval_batch_size: int = 256, level: str | None = None) -> dict:
    """Train, evaluate the test split, write ``out_dir/summary.json`` and return the summary.

    ``subset`` keeps the first N training images (quick runs). The test split is scored
    every ``config.eval_every`` updates and at the end. With code grids (``data`` a code
    folder, ``level`` for VQ-VAE-2), the exported model records the VQ-VAE that made them.
    ``resume`` continues the run in ``out_dir``, ``overwrite`` replaces it (see ``Trainer.fit``).
    """
    PRIORS.get(prior)  # an unknown name fails before any data is read
    set_seed(config.seed)  # the initial weights
    train, test = (open_dataset(data, split, data_root, level=level) for split in ("train", "test"))
    source = (train.fingerprint, train.level) if isinstance(train, CodeDataset) else None  # the VQ-VAE, its level
    model = prior_for(train, prior, head=head, preset=preset, class_conditional=class_conditional, arch=arch)
    train = first_items(train, subset)

    def evaluate(model, accelerator):
        return evaluate_prior(model, test, accelerator, batch_size=eval_batch_size)

    trainer = Trainer(model, prior_objective, train, config, out_dir, evaluate=evaluate, overwrite=overwrite)
    result = trainer.fit(resume=resume)
    summary = {"data": data, "prior": prior, "preset": preset, "head": head, "arch": arch or {},
               "class_conditional": class_conditional, "train_items": len(train),
               "parameters": sum(p.numel() for p in model.parameters()), "steps": result["step"],
               "ema": config.ema_decay is not None, "train": result["train"], "test": result["eval"]}
    if trainer.accelerator.is_main_process:
        atomic_write_json(Path(out_dir) / SUMMARY_FILE, summary)
        if source is not None:
            write_codes_source(Path(out_dir) / MODEL_DIR, *source)
    return summary

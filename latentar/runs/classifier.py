"""``latentar train-classifier``: the dataset classifier whose features the sample metrics
compare offline (``latentar.quality``), trained by the same trainer as every stage.

    record = train_classifier(DataConfig("mnist"), "runs/mnist-classifier", TrainConfig(steps=2000))
    record["test"]["accuracy"]

The run folder is a trainer's (checkpoints, metrics.jsonl, ``model/``, done.json; resumable),
and the exported ``model/`` records the test accuracy in its config and model card, so every
number measured with it can say how good a classifier it is.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import PartialState
from accelerate.utils import set_seed
from torch.utils.data import Dataset

from latentar.classifier import ClassifierConfig, ImageClassifier
from latentar.config import DataConfig
from latentar.data import first_items, load_dataset
from latentar.data.catalog import SymbolDataset
from latentar.data.codes import CodeDataset
from latentar.evaluation import process_share
from latentar.model_card import write_model_card
from latentar.nn.modes import eval_mode
from latentar.progress import progress_bar
from latentar.run_files import MODEL_DIR, read_done
from latentar.runs.stages import FRESH, Rerun
from latentar.training import TrainConfig, Trainer


def classifier_objective(classifier, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """``classifier.loss``: the cross-entropy of an ``(images uint8 (B, C, H, W), labels (B,))`` batch,
    and its accuracy."""
    images, labels = batch[0], batch[1]
    return classifier.loss(images, labels)


@torch.no_grad()
def evaluate_classifier(classifier, data: Dataset, accelerator=None, *,
                        batch_size: int = 256) -> dict:
    """``accuracy``, ``loss`` (mean cross-entropy, nats) and ``count`` of an `ImageClassifier` over a whole split of
    (uint8 image, label) items, summed over every process."""
    totals = torch.zeros(3, dtype=torch.float64, device=classifier.device)  # loss, correct, items
    with eval_mode(classifier):
        for images, labels in progress_bar(process_share(data, accelerator, batch_size), desc="score test",
                                           unit="batch"):
            logits = classifier(images)
            labels = labels.to(logits.device)
            totals += torch.stack([F.cross_entropy(logits, labels, reduction="sum").double(),
                                   (logits.argmax(1) == labels).sum().double(), totals.new_tensor(len(labels))])
    if accelerator is not None:
        totals = accelerator.reduce(totals, reduction="sum")
    loss, correct, count = totals.tolist()
    if count == 0:
        raise ValueError("evaluate_classifier got an empty split")
    return {"accuracy": correct / count, "loss": loss / count, "count": int(count)}


def classifier_config(train: SymbolDataset, name: str, width: int, feature_dim: int) -> ClassifierConfig:
    """The classifier of the images of ``train`` (the dataset called ``name``)."""
    if isinstance(train, CodeDataset):
        raise ValueError(f"{name} is a folder of code grids; a classifier learns the images of a dataset "
                         "(--data mnist, ...)")
    classes = getattr(train, "num_classes", None)
    if not classes or classes < 2:
        raise ValueError(f"dataset {name} has {classes or 'no'} class(es); a classifier needs at least 2")
    C, H, W = train.shape
    return ClassifierConfig(image_shape=(C, H, W), num_classes=classes, levels=train.num_symbols,
                            width=width, feature_dim=feature_dim, dataset=name)


def train_classifier(data: DataConfig, out_dir: str | Path, config: TrainConfig, *, width: int = 32,
                     feature_dim: int = 128, subset: int | None = None, rerun: Rerun = FRESH,
                     eval_batch_size: int = 256) -> dict:
    """Train an `ImageClassifier` on ``data``'s training split (the first ``subset`` items) into
    ``out_dir``, score the test split, and record its accuracy in ``out_dir/model`` -> the
    record {"data", "step", "train", "test", "model", "reused"}. With ``rerun.reuse`` a finished
    classifier in ``out_dir`` is taken as it is (a recipe's ``classifier/`` stage)."""
    folder = Path(out_dir) / MODEL_DIR
    done = read_done(out_dir) if rerun.reuse else None
    if done is not None:
        return {"data": data.name, "step": done["step"], "train": done["train"], "test": done["eval"],
                "model": str(folder), "reused": True}
    train, test = (load_dataset(data.name, split, data.root, **data.options) for split in ("train", "test"))
    build = classifier_config(train, data.name, width, feature_dim)
    set_seed(config.seed)  # the initial weights
    trainer = Trainer(ImageClassifier(build), classifier_objective, first_items(train, subset), config, out_dir,
                      evaluate=lambda model, acc: evaluate_classifier(model, test, acc, batch_size=eval_batch_size),
                      dataset=data.name, overwrite=rerun.overwrite)
    result = trainer.fit(resume=rerun.resume)
    if PartialState().is_main_process:  # the exported model, again, with its test accuracy recorded
        model = trainer.final_model()
        assert isinstance(model, ImageClassifier)
        model.config.test_accuracy = result["eval"]["accuracy"]
        model.save(folder)
        write_model_card(folder, model, dataset=data.name, training=asdict(config), metrics=result["eval"])
    return {"data": data.name, "step": result["step"], "train": result["train"], "test": result["eval"],
            "model": str(folder), "reused": False}

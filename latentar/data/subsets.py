"""Parts of a dataset: its first items, attributes seen through ``Subset`` wrappers, and what a
score of a split must say about it (`split_notes`)."""

from __future__ import annotations

from collections.abc import Sized
from typing import Any, cast

from torch.utils.data import Dataset, Subset


def dataset_size(dataset: Dataset) -> int:
    """``len(dataset)``: torch's ``Dataset`` declares no ``__len__``, though every dataset latentar
    reads (and a ``Subset`` of one) has it."""
    return len(cast(Sized, dataset))


def first_items(dataset: Dataset, n: int | None, *, at_most: bool = False) -> Dataset:
    """The first ``n`` items of ``dataset`` (all of it for None); quick runs train on these.

    ``n`` must lie in [1, len(dataset)]; with ``at_most`` a larger ``n`` keeps the whole dataset.
    """
    if n is None or (at_most and n >= dataset_size(dataset)):
        return dataset
    if not 1 <= n <= dataset_size(dataset):
        raise ValueError(f"subset must be in [1, {dataset_size(dataset)}] (the training set's size), got {n}")
    return Subset(dataset, range(n))


def dataset_attribute(dataset: Dataset, name: str) -> Any:
    """``dataset.name``, looking through ``Subset`` wrappers; None when absent."""
    while not hasattr(dataset, name) and isinstance(dataset, Subset):
        dataset = dataset.dataset
    return getattr(dataset, name, None)


def split_notes(dataset: Dataset) -> dict:
    """What scores of ``dataset`` must carry: ``binarization`` (how its pixels became {0, 1}),
    ``scored_on`` (that the split is the training images, and why: `same_as_training`) and ``tokens``
    (what a symbol is, for Image GPT's palette tokens: their scores are per palette token), where they apply."""
    notes = {}
    tokens = dataset_attribute(dataset, "tokens")
    if tokens is not None:
        notes["tokens"] = tokens
    binarization = dataset_attribute(dataset, "binarization")
    if binarization is not None:
        notes["binarization"] = binarization
    same = dataset_attribute(dataset, "same_as_training")
    if same is not None:
        notes["scored_on"] = f"the training images: no held-out test split ({same})"
    return notes

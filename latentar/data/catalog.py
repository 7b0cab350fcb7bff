"""The named image datasets: ``load_dataset(name, split)``, ``fetch(name)``, ``dataset_info(name)``,
and ``register_dataset(name)`` for one of your own.
``load_dataset`` also opens a folder of code grids made by ``latentar encode``, so one call opens
whatever a ``--data`` flag names.

Each name in ``DATASETS`` maps to a `DatasetSpec`; ``root`` is the data root (the
CLI's ``--data-root``, see `data_root`) except for ``image_folder``, where it is the
folder of images itself.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Mapping

from torch.utils.data import Dataset

from latentar.checks import Bound, check_value
from latentar.data.cifar import IMAGE_SHAPE as CIFAR_SHAPE
from latentar.data.cifar import NUM_CLASSES as CIFAR_CLASSES
from latentar.data.cifar import fetch_cifar10, load_cifar_split
from latentar.data.codes import MANIFEST, CodeDataset
from latentar.data.holdout import TEST_FRACTION
from latentar.data.images import (
    BINARIZATION_SEED,
    ImageFolderDataset,
    TensorImageDataset,
    binarized,
    image_folder_split,
)
from latentar.data.sources import FASHION_MNIST, MNIST, IdxSource, fetch_idx, load_idx_split
from latentar.registry import DATASETS

SPLITS = ("train", "test")
MNIST_SHAPE = (1, 28, 28)  # (C, H, W), MNIST and Fashion-MNIST
MAX_IMAGE_SIZE = 4096  # image_folder's size option: larger images would not fit a prior's memory
DATASET_ATTRIBUTES = ("shape", "num_symbols", "num_classes")  # what every loaded dataset tells a prior
Loader = Callable[..., Dataset]  # (split, root, **options) -> dataset; options keyword-only
SymbolDataset = TensorImageDataset | ImageFolderDataset | CodeDataset  # what load_dataset opens: sized, with
# shape (C, H, W), num_symbols and num_classes


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: how to load and fetch it, and what its items are."""

    load: Loader  # (split, root, **options) -> dataset; options keyword-only
    fetch: Callable[[str | Path | None], dict] | None  # (root) -> report; None: nothing to fetch
    shape: tuple[int, int, int] | None  # (C, H, W) of an item; None when an option decides it
    num_symbols: int  # K: 256 pixel levels, 2 when binarized
    num_classes: int | None  # None when the data decides it
    source: str  # where the data comes from, in words
    bounds: Mapping[str, Bound] = field(default_factory=dict)  # the range of a number option


def load_dataset(name: str, split: str, root: str | Path | None = None, *, level: str | None = None,
                 **options) -> SymbolDataset:
    """The ``split`` ("train" or "test") of the dataset registered as ``name``, or of the code
    grids in the folder ``name`` (made by ``latentar encode``).

    A registered dataset's items are ``(uint8 tensor (C, H, W), int label)``; the dataset has
    ``shape``, ``num_symbols``, ``num_classes`` and ``binarization``. Unknown names, splits or
    options raise with the valid ones listed, and option values are checked against the
    loader's annotations (``FieldError``) before anything is read. A code folder gives a
    `CodeDataset` (items ``(long (1, h, w), label)``) and takes no options: ``level`` picks a
    VQ-VAE-2 level, and the bottom level comes with the top codes as its spatial context.
    """
    if name not in DATASETS and Path(name).is_dir():
        return load_codes(name, split, level, options)
    if level is not None:
        raise ValueError(f"level={level!r} picks a level of code grids, but {name} is an image dataset")
    spec = DATASETS.get(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
    check_options(name, spec, options)
    dataset = spec.load(split, root, **options)
    missing = [key for key in DATASET_ATTRIBUTES if not hasattr(dataset, key)]
    if missing:
        raise TypeError(f"dataset {name!r} loaded a {type(dataset).__name__} without {', '.join(missing)}; "
                        f"a loader returns e.g. a latentar.data.TensorImageDataset")
    return dataset


def register_dataset(name: str, *, shape: tuple[int, int, int] | None = None, num_symbols: int = 256,
                     num_classes: int | None = None, source: str = "registered in Python",
                     fetch: Callable[[str | Path | None], dict] | None = None,
                     bounds: Mapping[str, Bound] | None = None) -> Callable[[Loader], Loader]:
    """Decorator: register ``load(split, root, *, OPTION=default, ...)`` as the dataset ``name``.

    ``load`` returns the ``split`` ("train" or "test") as a dataset of ``(uint8 (C, H, W), int
    label)`` items with ``shape``, ``num_symbols`` and ``num_classes`` (a `TensorImageDataset`,
    for one); its keyword-only parameters are the dataset's options, checked against their
    annotations and ``bounds``. The other arguments are what `dataset_info` tells without loading
    (None: the data decide). Then ``load_dataset(name, split)``, a recipe's ``[data] name`` and
    the trainers open it by name, in this process. A name already taken raises.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a dataset name must be a non-empty string, got {name!r}")

    def add(load: Loader) -> Loader:
        DATASETS.register(name)(DatasetSpec(load=load, fetch=fetch, shape=shape, num_symbols=num_symbols,
                                            num_classes=num_classes, source=source, bounds=bounds or {}))
        return load

    return add


def load_codes(folder: str, split: str, level: str | None, options: dict) -> CodeDataset:
    """`load_dataset` of a folder, which must hold the code grids of ``latentar encode``."""
    if not os.path.lexists(Path(folder) / MANIFEST):
        raise ValueError(f"{folder} is a folder without {MANIFEST}, so neither code grids nor a dataset name; "
                         f"known datasets: {', '.join(DATASETS.names())}")
    if options:
        raise TypeError(f"{folder} holds code grids, which take no dataset options; got {', '.join(options)}")
    return CodeDataset(folder, split, level, context="top" if level == "bottom" else None)


def check_options(name: str, spec: DatasetSpec, options: dict) -> None:
    """Each option must be a keyword-only parameter of ``spec.load`` and fit its type and bound."""
    accepted = {p.name: p.annotation for p in inspect.signature(spec.load, eval_str=True).parameters.values()
                if p.kind is p.KEYWORD_ONLY}
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"dataset {name!r} has no option {', '.join(unknown)}; "
                        f"its options: {', '.join(accepted) or 'none'}")
    for key, value in options.items():
        check_value(value, accepted[key], f"dataset {name!r} option {key}", spec.bounds.get(key))


def fetch(name: str, root: str | Path | None = None) -> dict:
    """Download (if needed) and verify dataset ``name`` under the data root; returns a report.

    The report's fields: dataset, status ("fetched" or "already present"), source,
    fetched_from, location, files, verified (how), moved_aside (bad files replaced).
    """
    spec = DATASETS.get(name)
    if spec.fetch is None:
        raise ValueError(f"dataset {name!r} has nothing to fetch: {spec.source}")
    return spec.fetch(root)


def describe_fetch(report: dict) -> str:
    """A few human-readable lines for a `fetch` report."""
    how = f"fetched from {report['fetched_from']}" if report["fetched_from"] else "already present"
    lines = [f"{report['dataset']}: {how}",
             f"  source:   {report['source']}",
             f"  location: {report['location']}",
             f"  files:    {', '.join(report['files'])}",
             f"  verified: {report['verified']}"]
    lines += [f"  replaced a bad file: {problem}" for problem in report["moved_aside"]]
    return "\n".join(lines)


def dataset_info(name: str) -> dict:
    """What dataset ``name`` holds, without loading it: shape (C, H, W), num_symbols, num_classes, source."""
    spec = DATASETS.get(name)
    return {"name": name, "shape": spec.shape, "num_symbols": spec.num_symbols,
            "num_classes": spec.num_classes, "source": spec.source}


def _load_idx(source: IdxSource, split: str, root: str | Path | None, *,
              download: bool = True) -> TensorImageDataset:
    images, labels = load_idx_split(source, split, root, download=download)
    return TensorImageDataset(images, labels, num_classes=10)


def _load_binarized_mnist(split: str, root: str | Path | None, *,
                          download: bool = True) -> TensorImageDataset:
    return binarized(_load_idx(MNIST, split, root, download=download))


def _load_cifar10(split: str, root: str | Path | None, *, download: bool = True,
                  verify: bool = True) -> TensorImageDataset:
    images, labels = load_cifar_split(split, root, download=download, verify=verify)
    return TensorImageDataset(images, labels, num_classes=CIFAR_CLASSES)


def _load_image_folder(split: str, root: str | Path | None, *, size: int = 64, skip_bad_images: bool = False,
                       test_fraction: float | None = None) -> ImageFolderDataset:
    """``root/split`` of a folder with ``train/`` and ``test/``; else one side of the folder's held-out
    split (``test_fraction``, default `TEST_FRACTION`), which a split folder refuses."""
    if root is None:
        raise ValueError("dataset 'image_folder' needs root= the folder of images (CLI: --data-root FOLDER)")
    folder = image_folder_split(root, split)
    if folder != Path(root):
        if test_fraction is not None:
            raise ValueError(f"image folder {root} has train/ and test/ sub-folders, which are its split; "
                             f"test_fraction={test_fraction} applies only to a folder without them")
        return ImageFolderDataset(folder, size, skip_bad_images=skip_bad_images)
    return ImageFolderDataset(folder, size, skip_bad_images=skip_bad_images, split=split,
                              test_fraction=TEST_FRACTION if test_fraction is None else test_fraction)


DATASETS.register("mnist")(DatasetSpec(
    load=partial(_load_idx, MNIST), fetch=partial(fetch_idx, MNIST),
    shape=MNIST_SHAPE, num_symbols=256, num_classes=10, source=MNIST.origin))
DATASETS.register("fashion_mnist")(DatasetSpec(
    load=partial(_load_idx, FASHION_MNIST), fetch=partial(fetch_idx, FASHION_MNIST),
    shape=MNIST_SHAPE, num_symbols=256, num_classes=10, source=FASHION_MNIST.origin))
DATASETS.register("binarized_mnist")(DatasetSpec(
    load=_load_binarized_mnist, fetch=partial(fetch_idx, MNIST),
    shape=MNIST_SHAPE, num_symbols=2, num_classes=10,
    source=f"{MNIST.origin}, binarized by bernoulli(pixel/255) with seed {BINARIZATION_SEED}"))
DATASETS.register("cifar10")(DatasetSpec(
    load=_load_cifar10, fetch=fetch_cifar10,
    shape=CIFAR_SHAPE, num_symbols=256, num_classes=CIFAR_CLASSES,
    source="torchvision's CIFAR10 download, or a copy in DATA_ROOT/cifar-10-batches-py"))
DATASETS.register("image_folder")(DatasetSpec(
    load=_load_image_folder, fetch=None,
    shape=None, num_symbols=256, num_classes=None,
    source="a folder of images you provide (root=FOLDER, options size, skip_bad_images, test_fraction)",
    bounds={"size": Bound(1, MAX_IMAGE_SIZE), "test_fraction": Bound(0, 1, open_high=True)}))

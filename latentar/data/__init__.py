"""Image datasets (offline, checksum-verified sources) for latentar.

    from latentar.data import load_dataset, fetch
    train = load_dataset("mnist", "train")   # items: (uint8 (1, 28, 28), int label)
    codes = load_dataset("runs/mnist-codes", "train")   # a folder of `latentar encode`: (long (1, 7, 7), label)
    print(describe_fetch(fetch("fashion_mnist")))

Datasets: mnist, fashion_mnist, binarized_mnist, cifar10, image_folder
(see ``DATASETS.names()``), and your own: ``@register_dataset("name")`` on a loader.
Files live under `data_root()`.
"""

from latentar.data.cache import ChecksumError, CorruptFileError, SourceUnavailableError, data_root
from latentar.data.catalog import DatasetSpec, dataset_info, describe_fetch, fetch, load_dataset, register_dataset
from latentar.data.images import ImageFolderDataset, TensorImageDataset, binarize
from latentar.data.subsets import dataset_attribute, first_items

__all__ = [
    "ChecksumError", "CorruptFileError", "DatasetSpec", "ImageFolderDataset", "SourceUnavailableError",
    "TensorImageDataset", "binarize", "data_root", "dataset_attribute", "dataset_info", "describe_fetch", "fetch",
    "first_items", "load_dataset", "register_dataset",
]

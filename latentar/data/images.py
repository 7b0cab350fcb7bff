"""Image datasets: items are ``(uint8 tensor (C, H, W), int label)``.

Every dataset carries what a prior needs to know about its symbols:
``shape`` (C, H, W), ``num_symbols`` (256 pixel levels, or 2 when binarized),
``num_classes``, and ``binarization`` (``None``, or how pixels became {0, 1}).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.datasets import ImageFolder

BINARIZATION_SEED = 0  # the fixed seed of binarized MNIST, the same for both splits


class TensorImageDataset(Dataset):
    """A whole split held in memory: images uint8 (N, C, H, W), labels int64 (N,)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, num_symbols: int = 256,
                 num_classes: int, binarization: str | None = None):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (len(images),):
            raise ValueError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
        self.images = images  # (N, C, H, W)
        self.labels = labels.long()  # (N,)
        self.shape = tuple(images.shape[1:])  # (C, H, W)
        self.num_symbols = num_symbols
        self.num_classes = num_classes
        self.binarization = binarization

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


def binarize(images: torch.Tensor, seed: int = BINARIZATION_SEED) -> torch.Tensor:
    """Stochastic binarization: each pixel is 1 with probability pixel/255.

    A pure function of ``(images, seed)``: uint8 (N, C, H, W) in [0, 255] -> uint8 of the
    same shape in {0, 1}. Pixel 0 always gives 0 and 255 always gives 1.
    """
    generator = torch.Generator().manual_seed(seed)
    uniform = torch.rand(images.shape, generator=generator)  # (N, C, H, W) in [0, 1)
    return (uniform < images.float() / 255).to(torch.uint8)


def binarized(dataset: TensorImageDataset, seed: int = BINARIZATION_SEED) -> TensorImageDataset:
    """The dataset with its pixels binarized once by `binarize` (K = 2 symbols)."""
    return TensorImageDataset(binarize(dataset.images, seed), dataset.labels, num_symbols=2,
                              num_classes=dataset.num_classes,
                              binarization=f"bernoulli(pixel/255), seed {seed}")


class ImageFolderDataset(Dataset):
    """Any folder of images, RGB, resized (shorter side) and centre-cropped to ``size``.

    Images in class sub-folders (``FOLDER/CLASS/x.png``, torchvision's ImageFolder
    layout) get one label per sub-folder; a flat folder of images is one class.
    Decoding happens per item, so the folder can be larger than memory.
    """

    def __init__(self, folder: str | Path, size: int):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"image folder {self.folder} does not exist")
        pipeline = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size),
                                       transforms.PILToTensor()])
        self._images = _FlatOrClassFolder(str(self.folder), transform=pipeline)
        self.classes = self._images.classes
        self.shape = (3, size, size)  # (C, H, W)
        self.num_symbols = 256
        self.num_classes = len(self.classes)
        self.binarization = None

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._images[index]  # (uint8 (3, size, size), int)


class _FlatOrClassFolder(ImageFolder):
    """`ImageFolder` that also accepts images lying directly in the folder (one class)."""

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        if any(entry.is_dir() for entry in Path(directory).iterdir()):
            return super().find_classes(directory)
        return [""], {"": 0}  # "" joins to the folder itself


def image_folder_split(folder: str | Path, split: str) -> Path:
    """The folder that holds ``split``: ``FOLDER/split`` if the folder is split, else ``FOLDER``.

    A folder with only one of ``train/`` and ``test/`` is ambiguous and raises.
    """
    folder = Path(folder)
    present = [name for name in ("train", "test") if (folder / name).is_dir()]
    if split in present:
        return folder / split
    if present:
        raise FileNotFoundError(f"{folder} has {present[0]}/ but no {split}/ sub-folder")
    return folder

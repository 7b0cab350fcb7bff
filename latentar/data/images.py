"""Image datasets: items are ``(uint8 tensor (C, H, W), int label)``.

Every dataset carries what a prior needs to know about its symbols:
``shape`` (C, H, W), ``num_symbols`` (256 pixel levels, or 2 when binarized),
``num_classes``, and ``binarization`` (``None``, or how pixels became {0, 1}).
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from latentar.data.holdout import TEST_FRACTION, held_out_names

BINARIZATION_SEED = 0  # the fixed seed of binarized MNIST, the same for both splits
MAX_IMAGE_PIXELS = 64 * 2**20  # width * height of one image file; larger ones are refused undecoded
LISTED_BAD_FILES = 10  # how many bad files a message names before "and N more"
SKIP_HINT = ("Fix or remove them, or leave them out with the dataset option skip_bad_images = true (a recipe: "
             "[data] options = {skip_bad_images = true}; a command that takes --data: "
             "--data-option skip_bad_images=true; Python: skip_bad_images=True)")


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
        _, C, H, W = images.shape
        self.shape = (C, H, W)
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
    Every file is decoded once here (see `image_problem`): a bad one raises a
    ``ValueError`` listing them all, or with ``skip_bad_images`` is left out with a
    warning. Items are decoded again when read, so the folder can be larger than memory.

    ``split`` None keeps every image; "train" or "test" keeps one side of the held-out split
    of `held_out_names` (``test_fraction`` of the images, chosen by a hash of their names).
    When nothing is held out (``test_fraction = 0``, or a single image) the test split is
    the training images: a warning says so, and ``same_as_training`` says why (else None).
    """

    def __init__(self, folder: str | Path, size: int, *, skip_bad_images: bool = False, split: str | None = None,
                 test_fraction: float = TEST_FRACTION):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"image folder {self.folder} does not exist")
        pipeline = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size),
                                       transforms.PILToTensor()])
        self._images = _FlatOrClassFolder(str(self.folder), transform=pipeline, allow_empty=True)
        bad = {path: problem for path, _ in self._images.samples if (problem := image_problem(path))}
        if bad:
            self._leave_out(bad, skip_bad_images)
        _check_every_class_has_images(self.folder, self._images, len(bad))
        self.same_as_training: str | None = None
        if split is not None:
            self._keep_side(split, test_fraction)
        self.classes = self._images.classes
        self.shape = (3, size, size)  # (C, H, W)
        self.num_symbols = 256
        self.num_classes = len(self.classes)
        self.binarization = None

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._images[index]  # (uint8 (3, size, size), int)

    def _leave_out(self, bad: dict[str, str], skip: bool) -> None:
        """Drop the ``bad`` files (path -> problem) from the samples with a warning, or raise if not ``skip``."""
        listing = _list_bad_files(self.folder, bad)
        if not skip:
            raise ValueError(f"image folder {self.folder} has {len(bad)} bad image file(s) out of "
                             f"{len(self._images.samples)}:\n{listing}\n{SKIP_HINT}")
        warnings.warn(f"image folder {self.folder}: left out {len(bad)} bad image file(s) "
                      f"(skip_bad_images):\n{listing}", stacklevel=3)
        self._keep(lambda path: path not in bad)

    def _keep_side(self, split: str, test_fraction: float) -> None:
        """Keep the ``split`` side ("train" or "test") of the held-out split, or warn that there is none."""
        if split not in ("train", "test"):
            raise ValueError(f"unknown split {split!r}; splits: train, test")
        names = {path: Path(os.path.relpath(path, self.folder)).as_posix() for path, _ in self._images.samples}
        test = held_out_names(list(names.values()), test_fraction)
        if test:
            self._keep(lambda path: (names[path] in test) == (split == "test"))
        elif split == "test":
            self.same_as_training = ("test_fraction = 0" if test_fraction == 0
                                     else "the folder holds only 1 image")
            warnings.warn(f"image folder {self.folder} has no held-out test split ({self.same_as_training}): the "
                          f"test split is the training images, so its scores are on the training images",
                          stacklevel=4)

    def _keep(self, wanted: Callable[[str], bool]) -> None:
        """Keep only the samples whose path is ``wanted`` (a path -> bool)."""
        self._images.samples = [(path, label) for path, label in self._images.samples if wanted(path)]
        self._images.imgs = self._images.samples
        self._images.targets = [label for _, label in self._images.samples]


def image_problem(path: str | Path) -> str | None:
    """Why the file at ``path`` is no usable image, or None when it decodes in full.

    Only a regular file is opened (a FIFO or a device would block or never end), and
    non-blocking, so a file swapped for a FIFO meanwhile cannot hang either. An image of
    more than `MAX_IMAGE_PIXELS` is refused from its header, before any pixel is decoded.
    """
    try:
        info = os.stat(path)
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_size == 0:
        return "empty file (0 bytes)"
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    with open(descriptor, "rb") as file:
        return _decoding_problem(file)


def _decoding_problem(file) -> str | None:
    """Why the image in the open binary ``file`` does not decode within the pixel cap, or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the cap below decides
            with Image.open(file) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    return (f"too large: {image.width}x{image.height} = {image.width * image.height} pixels, "
                            f"more than the cap of {MAX_IMAGE_PIXELS}")
                image.load()
    except Image.DecompressionBombError:  # PIL's own cap, raised from the header alone
        return f"too large: more than the cap of {MAX_IMAGE_PIXELS} pixels"
    except UnidentifiedImageError:
        return "cannot be decoded (not in an image format PIL reads, or its header is damaged)"
    except Exception as err:  # a damaged file fails in many ways (OSError, SyntaxError, ...); all mean "bad"
        return f"cannot be decoded ({type(err).__name__}: {err})"
    return None


def _list_bad_files(folder: Path, bad: dict[str, str]) -> str:
    """The first `LISTED_BAD_FILES` of ``bad`` (path -> problem), one indented line each, then "and N more"."""
    lines = [f"  {os.path.relpath(path, folder)}: {problem}" for path, problem in list(bad.items())[:LISTED_BAD_FILES]]
    if len(bad) > LISTED_BAD_FILES:
        lines.append(f"  and {len(bad) - LISTED_BAD_FILES} more")
    return "\n".join(lines)


def _check_every_class_has_images(folder: Path, images: ImageFolder, skipped: int) -> None:
    """Raise ``FileNotFoundError`` naming ``folder`` if it (flat), or one of its class sub-folders, has no image."""
    found = {label for _, label in images.samples}
    empty = [name for name, label in images.class_to_idx.items() if label not in found]
    if not empty:
        return
    left_out = f" once {skipped} bad file(s) are left out" if skipped else ""
    extensions = f"(extensions: {', '.join(IMG_EXTENSIONS)})"
    if images.classes == [""]:  # a flat folder
        raise FileNotFoundError(f"image folder {folder} holds no images{left_out} {extensions}")
    raise FileNotFoundError(f"image folder {folder}: the class sub-folder(s) {', '.join(sorted(empty))} "
                            f"hold no images{left_out} {extensions}")


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

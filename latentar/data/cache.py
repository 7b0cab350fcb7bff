"""Where datasets live on disk, and reading files that must match a known hash.

A file that fails its check is never used: it is renamed to ``NAME.corrupt`` so the
next fetch downloads a fresh copy, and the error says what was wrong.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CORRUPT_SUFFIX = ".corrupt"


class CorruptFileError(ValueError):
    """A data file that is damaged (truncated, wrong format, wrong hash)."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(str(path), problem)
        self.path = str(path)
        self.problem = problem
        self.moved_to: Path | None = None  # set once the file has been moved aside

    def __str__(self) -> str:
        aside = f"; moved aside to {self.moved_to}" if self.moved_to else ""
        return f"{self.path}: {self.problem}{aside}"


class ChecksumError(CorruptFileError):
    """A data file whose digest is not the published one."""

    def __init__(self, path: str | Path, *, algorithm: str, expected: str, actual: str,
                 what: str = "file"):
        super().__init__(path, f"{algorithm} of the {what} is {actual}, expected {expected}")
        self.algorithm, self.expected, self.actual = algorithm, expected, actual


class SourceUnavailableError(RuntimeError, LookupError):
    """A dataset that is neither on disk nor fetchable here (no network, a failed download); the
    message says what was tried and where to put the files. A LookupError: a user error, exit 2."""


def data_root(root: str | Path | None = None) -> Path:
    """The folder that holds downloaded datasets (not created here).

    Precedence: ``root`` (the CLI's ``--data-root``), then ``$LATENTAR_DATA``, then
    ``$XDG_CACHE_HOME/latentar/data``, then ``~/.cache/latentar/data``.
    """
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("LATENTAR_DATA"):
        return Path(os.environ["LATENTAR_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "latentar" / "data"


def digest(data: bytes, algorithm: str = "sha256") -> str:
    """Hex digest of ``data``; ``algorithm`` is any ``hashlib`` name."""
    return hashlib.new(algorithm, data).hexdigest()


def gunzip(raw: bytes, label: str | Path) -> bytes:
    """Decompress a gzip stream; a truncated or non-gzip stream raises `CorruptFileError`."""
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise CorruptFileError(label, f"truncated gzip stream ({len(raw)} bytes)") from None
    except (gzip.BadGzipFile, zlib.error) as err:
        raise CorruptFileError(label, f"not a valid gzip file ({err})") from None


def check_digest(data: bytes, expected: str, label: str | Path, *, algorithm: str = "sha256",
                 what: str = "file") -> None:
    """Raise `ChecksumError` naming ``label`` unless ``data`` hashes to ``expected``."""
    actual = digest(data, algorithm)
    if actual != expected:
        raise ChecksumError(label, algorithm=algorithm, expected=expected, actual=actual, what=what)


def verified_content(raw: bytes, sha256: str, label: str | Path, *,
                     hash_decompressed: bool) -> bytes:
    """Check and gunzip the bytes of a ``.gz`` file.

    ``hash_decompressed`` says whether ``sha256`` is the digest of the gunzipped
    content (Debian's Fashion-MNIST) or of the ``.gz`` file as stored (MNIST).
    Returns the gunzipped content.
    """
    if not hash_decompressed:
        check_digest(raw, sha256, label)
    content = gunzip(raw, label)
    if hash_decompressed:
        check_digest(content, sha256, label, what="decompressed content")
    return content


def move_aside(path: Path) -> Path:
    """Rename ``path`` to ``path.corrupt`` (replacing an older one); returns the new path."""
    target = path.with_name(path.name + CORRUPT_SUFFIX)
    os.replace(path, target)
    return target


@contextmanager
def moved_aside_if_corrupt(path: Path) -> Iterator[None]:
    """Move ``path`` aside if the block raises `CorruptFileError` about it, then re-raise."""
    try:
        yield
    except CorruptFileError as err:
        if path.exists():
            err.moved_to = move_aside(path)
        raise


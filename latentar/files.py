"""Reading and writing the files of run, checkpoint and model folders, safely against
damaged, hostile or full folders.

Reading (``read_bytes``, ``read_text``, ``read_json``, ``read_toml``): a file is opened
without following a symbolic link at its own name (``O_NOFOLLOW``; the one exception is a
Hub cache's link from a snapshot file to its blob, ``latentar.hub.is_cached_blob_link``), must be a regular
file (not a FIFO, a device or a folder), and is read up to a cap (``MAX_CONFIG_BYTES`` for
configs, manifests and recipes): a larger file is refused before it is read, so neither
``/dev/zero`` nor a 10 GB file can hang or exhaust a command. Text must be UTF-8; JSON and
TOML that are malformed or nested too deeply for Python's parsers are refused too. Every
refusal is a ``BadFileError`` (a ValueError) that names the file.

Writing (``atomic_write_bytes``, ``atomic_write_json``, ``atomic_write``): the content goes
to a temporary file in the same folder, ``.NAME.PID.XXXXXXXX.tmp``, which is fsynced and
renamed over ``NAME``: a crash or a full disk leaves the previous good file, never a torn
one, and renaming replaces a link at ``NAME`` instead of writing through it. Any failure
is a ``WriteError`` "cannot write PATH: reason". Temporary files of ours whose writer
process is gone (kill -9) are removed at the next write into that folder
(``remove_stale_temporaries``). Files get the usual mode (0666 less the umask), as
``open`` would give them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import stat
import tomllib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from latentar.hub import is_cached_blob_link

MAX_CONFIG_BYTES = 1 << 20  # config.json, manifests, run.json, recipes, summaries: 1 MiB at most
MAX_DATASET_FILE_BYTES = 1 << 30  # one file of a dataset latentar fetches (MNIST, CIFAR-10): far below 1 GiB
MIN_FREE_BYTES = 1 << 20  # a write that failed with less room than this on its disk failed for want of space
TOKEN_BYTES = 4  # a temporary's random part: 8 hex digits
TEMPORARY = re.compile(rf"^\..+\.(\d+)\.[0-9a-f]{{{2 * TOKEN_BYTES}}}\.tmp$")  # .NAME.PID.XXXXXXXX.tmp


class BadFileError(ValueError):
    """A file latentar must read that is not a regular file, too large, not UTF-8 or does not parse."""


class WriteError(OSError):
    """An output that could not be written ("cannot write PATH: reason"); the older file, if any, is kept."""


# ---- reading ----------------------------------------------------------------------------
def open_regular(path: str | os.PathLike, *, follow: bool = False) -> BinaryIO:
    """``path`` opened for reading, refused (``BadFileError``) unless it is a regular file
    reached without a link at its own name (``follow``: a link is fine, as for a file the
    user names). Raises FileNotFoundError when it does not exist."""
    path = Path(path)
    follow = follow or is_cached_blob_link(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if path.is_symlink():
            raise BadFileError(f"{path} is a symbolic link; latentar reads only regular files here") from e
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BadFileError(f"{path} is not a regular file (a folder, FIFO or device); latentar reads only "
                           "regular files here")
    return os.fdopen(fd, "rb")


def read_bytes(path: str | os.PathLike, limit: int = MAX_CONFIG_BYTES, *, follow: bool = False) -> bytes:
    """The content of the regular file ``path``, refused when it holds more than ``limit`` bytes."""
    with open_regular(path, follow=follow) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise BadFileError(f"{path} is larger than the {limit} bytes latentar reads from such a file")
    return data


def read_dataset_file(path: str | os.PathLike) -> bytes:
    """A downloaded dataset file: a regular file (a link to one is fine: data roots are often
    linked), read up to ``MAX_DATASET_FILE_BYTES``; a FIFO or device is refused, never read."""
    return read_bytes(path, MAX_DATASET_FILE_BYTES, follow=True)


def read_text(path: str | os.PathLike, limit: int = MAX_CONFIG_BYTES, *, follow: bool = False) -> str:
    """``read_bytes`` decoded as UTF-8."""
    try:
        return read_bytes(path, limit, follow=follow).decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadFileError(f"{path} is not UTF-8 text ({e})") from e


def read_json(path: str | os.PathLike, limit: int = MAX_CONFIG_BYTES, *, follow: bool = False) -> Any:
    """The parsed JSON file ``path`` (see the module docstring for what is refused)."""
    return parse(read_text(path, limit, follow=follow), path, json.loads, "JSON")


def read_toml(path: str | os.PathLike, limit: int = MAX_CONFIG_BYTES, *, follow: bool = False) -> dict:
    """The parsed TOML file ``path`` (see the module docstring for what is refused)."""
    return parse(read_text(path, limit, follow=follow), path, tomllib.loads, "TOML")


def parse(text: str, path: str | os.PathLike, loads: Callable[[str], Any], kind: str) -> Any:
    """``loads(text)``, the content of ``path``; a ValueError (malformed text, whose decode errors
    are ValueErrors, or an integer too long to convert) or a RecursionError (text nested deeper
    than Python's parsers go) -> ``BadFileError`` naming the file and the ``kind`` of text."""
    try:
        return loads(text)
    except ValueError as e:
        raise BadFileError(f"{path} is not valid {kind}: {e}") from e
    except RecursionError as e:
        raise BadFileError(f"{path} is nested too deeply for a {kind} file latentar reads") from e


def is_regular_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` itself (not what a link there points to, unless a Hub cache's link to a blob)
    is a regular file."""
    try:
        return stat.S_ISREG((os.stat if is_cached_blob_link(path) else os.lstat)(path).st_mode)
    except OSError:
        return False


def is_real_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` itself is a folder, not a link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


# ---- writing ----------------------------------------------------------------------------
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that a crash or a failed write leaves the old file whole."""
    with atomic_write(path) as f:
        f.write(data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; renamed over ``path`` when the
    block ends without an error, removed otherwise. Failures raise ``WriteError``."""
    path = Path(path)
    try:
        tmp = temporary_path(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as e:
        raise write_error(path, e) from e
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_folder(path.parent)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)) and not isinstance(e, WriteError):
            raise write_error(path, e) from e
        raise


def temporary_path(path: str | os.PathLike) -> Path:
    """A fresh name beside ``path`` for its next content, ``.NAME.PID.XXXXXX.tmp`` (the folder made
    if needed, and cleared of the temporaries of writers that are gone)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(TOKEN_BYTES)}.tmp"


def write_error(path: str | os.PathLike, error: BaseException) -> WriteError:
    """``WriteError`` "cannot write PATH: reason" for a failed write (an OSError, or a library's
    RuntimeError such as torch's "iostream error", read as a full disk when ``path``'s disk has no room)."""
    return WriteError(f"cannot write {path}: {write_reason(path, error)}")


def write_reason(path: str | os.PathLike, error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        full = shutil.disk_usage(folder).free < MIN_FREE_BYTES
    except OSError:
        full = False
    return f"No space left on device ({error})" if full else str(error)


def fsync_folder(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove ``folder``'s temporary files of ours whose writing process no longer runs -> them."""
    removed = []
    for entry in os.scandir(folder):
        match = TEMPORARY.match(entry.name)
        if match and entry.is_file(follow_symlinks=False) and not process_alive(int(match.group(1))):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # none, or a number no pid takes
        return False
    except PermissionError:  # another user's
        return True
    return True

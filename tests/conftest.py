"""Shared pytest setup."""

import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "network: needs a package registry (pip); skipped only when it cannot be reached")


@pytest.fixture
def image_folder(tmp_path):
    """A tiny two-class ``image_folder`` dataset of 8×8 PNGs: train/ (16 a class), test/ (4 a class)."""
    import torch
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 16), ("test", 4)):
        for label, name in enumerate(("bars", "blobs")):
            folder = tmp_path / "images" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                image = torch.randint(0, 64, (8, 8, 3), generator=generator, dtype=torch.uint8)
                image[::2] += 160 if label == 0 else 0  # horizontal bars, or dark noise
                image[2:6, 2:6] += 0 if label == 0 else 190
                Image.fromarray(image.numpy()).save(folder / f"{i}.png")
    return tmp_path / "images"

"""Hostile ``image_folder`` contents: damaged, empty, huge and special files are found when the
dataset opens, refused by name (default) or left out with a warning (``skip_bad_images``)."""

from __future__ import annotations

import io
import os
import re
import warnings

import numpy as np
import pytest
from PIL import Image
from recipe_cases import SMALL_PIXELS, write_recipe

from latentar import cli
from latentar.checks import FieldError
from latentar.data import load_dataset
from latentar.data.images import MAX_IMAGE_PIXELS

BAD = {  # file name -> the start of its reason, as the error lists it
    "truncated.jpg": "cannot be decoded",
    "garbage.png": "cannot be decoded",
    "empty.png": "empty file (0 bytes)",
    "huge.png": "too large",
    "dangling.png": "cannot be read",
}


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory) -> bytes:
    """A 20000x20000 PNG: 400 megapixels in about 50 KB (one bit a pixel, all zero)."""
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    Image.new("1", (20000, 20000)).save(path)
    return path.read_bytes()


def jpeg_bytes(seed: int = 0) -> bytes:
    """A valid 32x32 RGB JPEG of noise."""
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_good(folder, n: int = 2) -> None:
    """``n`` good 12x12 PNGs and one good JPEG in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / f"good{i}.png")
    (folder / "good.jpg").write_bytes(jpeg_bytes())


@pytest.fixture
def hostile_folder(tmp_path, huge_png):
    """A flat folder: 3 good images, the 5 bad files of `BAD`, and a text file (not an image by name)."""
    folder = tmp_path / "images"
    write_good(folder)
    whole = jpeg_bytes(seed=2)
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "garbage.png").write_bytes(np.random.default_rng(3).bytes(1000))
    (folder / "empty.png").write_bytes(b"")
    (folder / "huge.png").write_bytes(huge_png)
    (folder / "dangling.png").symlink_to(tmp_path / "gone.png")
    (folder / "notes.txt").write_text("never read: not an image by its extension")
    return folder


def test_bad_files_are_refused_in_one_error_naming_each(hostile_folder):
    with pytest.raises(ValueError) as caught:
        load_dataset("image_folder", "train", root=hostile_folder, size=8)
    message = str(caught.value)
    assert message.startswith(f"image folder {hostile_folder} has 5 bad image file(s) out of 8:")
    for name, reason in BAD.items():
        assert f"  {name}: {reason}" in message
    assert "good" not in message and "notes.txt" not in message
    assert "skip_bad_images = true" in message and "--data-option skip_bad_images=true" in message


def test_skip_bad_images_leaves_them_out_with_one_warning(hostile_folder):
    with pytest.warns(UserWarning) as caught:
        data = load_dataset("image_folder", "train", root=hostile_folder, size=8, skip_bad_images=True,
                            test_fraction=0)  # train on all 3
    assert len(caught) == 1  # and no raw DecompressionBombWarning
    warning = str(caught[0].message)
    assert f"image folder {hostile_folder}: left out 5 bad image file(s)" in warning
    assert all(name in warning for name in BAD)
    assert len(data) == 3 and data.num_classes == 1
    assert all(image.shape == (3, 8, 8) and label == 0 for image, label in data)


def test_huge_images_are_refused_from_the_header(tmp_path, huge_png):
    folder = tmp_path / "images"
    write_good(folder)
    (folder / "huge.png").write_bytes(huge_png)  # over PIL's own limit
    Image.new("1", (8200, 8200)).save(folder / "big.png")  # over ours, under PIL's
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning would fail the test
        with pytest.raises(ValueError) as caught:
            load_dataset("image_folder", "train", root=folder, size=8)
    message = str(caught.value)
    assert f"huge.png: too large: more than the cap of {MAX_IMAGE_PIXELS} pixels" in message
    assert f"big.png: too large: 8200x8200 = 67240000 pixels, more than the cap of {MAX_IMAGE_PIXELS}" in message
    assert "DecompressionBomb" not in message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_special_files_are_reported_without_being_read(tmp_path):
    folder = tmp_path / "images"
    write_good(folder)
    os.mkfifo(folder / "x.png")  # opening it for reading would wait for a writer forever
    specials = ["x.png"]
    if os.path.exists("/dev/zero"):
        (folder / "zero.png").symlink_to("/dev/zero")  # reading it would never end
        specials.append("zero.png")
    with pytest.raises(ValueError) as caught:
        load_dataset("image_folder", "train", root=folder, size=8)
    assert all(f"{name}: not a regular file" in str(caught.value) for name in specials)
    with pytest.warns(UserWarning, match=f"left out {len(specials)} bad"):
        assert len(load_dataset("image_folder", "train", root=folder, size=8, skip_bad_images=True,
                                test_fraction=0)) == 3


def test_a_long_list_of_bad_files_is_cut_short(tmp_path):
    folder = tmp_path / "images"
    write_good(folder)
    for i in range(13):
        (folder / f"empty{i:02d}.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"has 13 bad image file\(s\) out of 16") as caught:
        load_dataset("image_folder", "train", root=folder)
    message = str(caught.value)
    assert "empty09.png" in message and "empty10.png" not in message and "\n  and 3 more\n" in message


def test_empty_folders_are_named(tmp_path):
    (tmp_path / "flat").mkdir()
    with pytest.raises(FileNotFoundError, match=rf"^image folder {re.escape(str(tmp_path / 'flat'))} "
                                                r"holds no images \(extensions: \.jpg, "):
        load_dataset("image_folder", "train", root=tmp_path / "flat")
    write_good(tmp_path / "classes" / "cats")
    (tmp_path / "classes" / "dogs").mkdir()
    with pytest.raises(FileNotFoundError, match=rf"^image folder {re.escape(str(tmp_path / 'classes'))}: "
                                                r"the class sub-folder\(s\) dogs hold no images \(extensions: "):
        load_dataset("image_folder", "train", root=tmp_path / "classes")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "empty.png").write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(FileNotFoundError, match="holds no images once 1 bad file"):
        load_dataset("image_folder", "train", root=tmp_path / "bad", skip_bad_images=True)


def test_skip_bad_images_is_a_checked_option(tmp_path):
    with pytest.raises(FieldError, match="option skip_bad_images must be true or false, got 'yes'"):
        load_dataset("image_folder", "train", root=tmp_path, skip_bad_images="yes")


def test_train_prior_refuses_bad_images_before_writing_the_run_folder(capsys, tmp_path, image_folder):
    whole = jpeg_bytes()
    (image_folder / "train" / "bars" / "broken.jpg").write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "run"
    code = cli.main(["train-prior", "--data", "image_folder", "--data-root", str(image_folder), "--prior", "pixelcnn",
                     "--preset", "tiny", "--arch", "hidden=4", "--steps", "1", "--batch-size", "4",
                     "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"latentar: error: image folder {image_folder / 'train'} has 1 bad image file(s)")
    assert f"{os.path.join('bars', 'broken.jpg')}: cannot be decoded" in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_a_recipe_refuses_bad_training_images_before_writing_its_folder(capsys, tmp_path, image_folder):
    whole = jpeg_bytes()
    (image_folder / "train" / "bars" / "broken.jpg").write_bytes(whole[: len(whole) // 2])
    recipe, out = write_recipe(tmp_path, image_folder, **SMALL_PIXELS), tmp_path / "run"
    code = cli.main(["run", str(recipe), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "bars/broken.jpg" in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())

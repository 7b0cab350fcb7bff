"""Your own images: the held-out split of a folder without train/ and test/ (by a hash of each
file's name), the warnings and labels when nothing is held out, the README's one command from a
folder to samples, and datasets registered by name (`register_dataset`)."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import latentar
from latentar import cli
from latentar.checks import FieldError
from latentar.data import TensorImageDataset, load_dataset, register_dataset
from latentar.data.codes import encode_dataset
from latentar.data.holdout import TEST_FRACTION, held_out_names, name_position
from latentar.data.subsets import split_notes
from latentar.evaluation import evaluate_vqvae
from latentar.registry import DATASETS

README = Path(__file__).parent.parent / "README.md"
NAMES = [f"photo_{i:04d}.jpg" for i in range(200)]


def write_pngs(folder: Path, names: list[str], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(folder / name)


def image_names(dataset) -> set[str]:
    """The names (paths inside the folder) of an image_folder split's images."""
    return {Path(path).relative_to(dataset.folder).as_posix() for path, _ in dataset._images.samples}


# ---------------------------------------------------------------- the split of names

def test_a_name_s_number_is_the_sha256_of_the_name():
    for name in ("a.png", "cats/b.png", "é.jpg"):
        assert name_position(name) == int(hashlib.sha256(name.encode()).hexdigest()[:16], 16) / 2**64
    assert all(0 <= name_position(name) < 1 for name in NAMES)


def test_the_split_is_deterministic_and_ignores_the_order_of_names():
    test = held_out_names(NAMES, 0.1)
    assert test == held_out_names(list(reversed(NAMES)), 0.1) == held_out_names(NAMES, 0.1)
    assert test < set(NAMES)


def test_adding_images_never_moves_the_others():
    before = held_out_names(NAMES, 0.1)
    after = held_out_names(NAMES + [f"new_{i}.png" for i in range(100)], 0.1)
    assert after & set(NAMES) == before
    assert after - set(NAMES)  # some of the new ones are held out


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5])
def test_the_fraction_is_roughly_honoured(fraction):
    held = len(held_out_names(NAMES, fraction))
    spread = 4 * (len(NAMES) * fraction * (1 - fraction)) ** 0.5  # four binomial standard deviations
    assert abs(held - fraction * len(NAMES)) <= spread, held


def test_both_sides_keep_an_image_when_there_are_two():
    low, high = sorted(NAMES[:2], key=name_position)
    assert held_out_names([low, high], 1e-9) == {low}  # none below the fraction: the lowest is held out
    assert held_out_names([low, high], 0.999999) == {low}  # all below it: the highest is kept for training
    assert held_out_names(["only.png"], 0.5) == set() and held_out_names(NAMES, 0) == set()
    with pytest.raises(ValueError, match=r"test_fraction must lie in \[0, 1\), got 1"):
        held_out_names(NAMES, 1)


# ---------------------------------------------------------------- image folders

def test_a_flat_folder_holds_out_its_test_images(tmp_path):
    names = [f"{i}.png" for i in range(40)]
    write_pngs(tmp_path, names)
    train = load_dataset("image_folder", "train", root=tmp_path, size=8, test_fraction=0.2)
    test = load_dataset("image_folder", "test", root=tmp_path, size=8, test_fraction=0.2)
    assert image_names(test) == held_out_names(names, 0.2)
    assert image_names(train) == set(names) - image_names(test) and len(test) >= 1
    assert test.same_as_training is None and split_notes(test) == {}
    default = load_dataset("image_folder", "test", root=tmp_path, size=8)
    assert image_names(default) == held_out_names(names, TEST_FRACTION)

    write_pngs(tmp_path, ["later.png"], seed=1)  # an image added later keeps the others where they were
    again = load_dataset("image_folder", "test", root=tmp_path, size=8, test_fraction=0.2)
    assert image_names(again) - {"later.png"} == image_names(test)


def test_class_folders_split_by_their_paths_and_keep_their_classes(tmp_path):
    names = [f"{kind}/{i}.png" for kind in ("cats", "dogs") for i in range(15)]
    write_pngs(tmp_path, names)
    test = load_dataset("image_folder", "test", root=tmp_path, size=8, test_fraction=0.3)
    assert image_names(test) == held_out_names(names, 0.3) and test.num_classes == 2
    train = load_dataset("image_folder", "train", root=tmp_path, size=8, test_fraction=0.3)
    assert {label for _, label in train} == {0, 1} and not image_names(train) & image_names(test)


def test_train_and_test_folders_keep_their_split_and_refuse_a_fraction(image_folder):
    assert len(load_dataset("image_folder", "test", root=image_folder, size=8)) == 8  # 4 per class, all of test/
    with pytest.raises(ValueError, match="has train/ and test/ sub-folders, which are its split; test_fraction=0.1"):
        load_dataset("image_folder", "train", root=image_folder, test_fraction=0.1)


@pytest.mark.parametrize("value", [1, 1.5, -0.1, "some"])
def test_a_bad_fraction_is_named(tmp_path, value):
    write_pngs(tmp_path, ["a.png", "b.png"])
    with pytest.raises(FieldError, match="option test_fraction must be"):
        load_dataset("image_folder", "test", root=tmp_path, test_fraction=value)


@pytest.mark.parametrize("names, options, reason", [
    (["a.png", "b.png", "c.png"], {"test_fraction": 0}, "test_fraction = 0"),
    (["only.png"], {}, "the folder holds only 1 image"),
])
def test_no_held_out_split_is_said_loudly_and_labels_the_scores(tmp_path, names, options, reason):
    write_pngs(tmp_path, names)
    train = load_dataset("image_folder", "train", root=tmp_path, size=4, **options)
    with pytest.warns(UserWarning, match=re.escape(f"has no held-out test split ({reason}): the test split is "
                                                   f"the training images")):
        test = load_dataset("image_folder", "test", root=tmp_path, size=4, **options)
    assert image_names(test) == image_names(train) == set(names)
    label = f"the training images: no held-out test split ({reason})"
    prior = latentar.build_prior("pixelcnn", test.shape, 256, preset="tiny")
    assert latentar.evaluate_prior(prior, test)["scored_on"] == label
    vqvae = latentar.VQVAE(test.shape, preset="tiny")
    assert evaluate_vqvae(vqvae, test)["scored_on"] == label
    encode_dataset(vqvae, test, tmp_path / "codes", "test", progress=False)  # the codes remember it
    codes = load_dataset(str(tmp_path / "codes"), "test")
    code_prior = latentar.build_prior("pixelcnn", codes.shape, codes.num_symbols, symbols="codes", preset="tiny")
    assert latentar.evaluate_prior(code_prior, codes)["scored_on"] == label


# ---------------------------------------------------------------- the one command

def readme_command() -> str:
    """The README's command that goes from a folder of images to samples."""
    (line,) = [line for line in README.read_text(encoding="utf-8").splitlines()
               if line.startswith("latentar run recipes/image-folder")]
    return line


def test_the_readme_command_goes_from_a_folder_to_samples(tmp_path, capsys, monkeypatch):
    names = [f"{i}.png" for i in range(30)]
    write_pngs(tmp_path / "path" / "to" / "folder", names)
    monkeypatch.chdir(tmp_path)
    argv = shlex.split(readme_command())[1:]
    assert "--data-root" in argv and "--data-option" in argv
    argv[1] = str(README.parent / argv[1])  # the recipe, from the repository
    tiny = ["vqvae.preset=tiny", "vqvae_train.steps=2", "vqvae_train.batch_size=8", "prior.preset=tiny",
            "prior_train.steps=2", "prior_train.warmup_steps=0", "prior_train.batch_size=8", "sampling.n=4",
            "sampling.reconstructions=4", "vqvae_train.sample_every=0", "prior_train.sample_every=0"]
    assert cli.main([*argv, *(arg for item in tiny for arg in ("--set", item)), "--data-option", "size=8"]) == 0
    out = Path(argv[argv.index("--out") + 1])
    summary = json.loads((out / "summary.json").read_text())
    held_out = len(held_out_names(names, TEST_FRACTION))
    assert summary["prior"]["test"]["count"] == summary["vqvae"]["test"]["count"] == held_out < len(names)
    assert "scored_on" not in summary["prior"]["test"]
    assert (out / "samples.png").is_file() and json.loads((out / "recipe.json").read_text())["data"]["options"] == {
        "size": 8}


def test_every_command_that_takes_data_takes_data_options():
    commands = cli.build_parser()._subparsers._group_actions[0].choices
    for name, parser in commands.items():
        flags = {flag for action in parser._actions for flag in action.option_strings}
        if flags & {"--data", "--data-root"}:
            assert "--data-option" in flags, name


# ---------------------------------------------------------------- datasets by name

def test_a_registered_dataset_checks_its_name_options_and_items():
    @register_dataset("test_own_images_dots", shape=(1, 4, 4), num_classes=2)
    def dots(split, root, *, count: int = 4):
        images = torch.zeros(count, 1, 4, 4, dtype=torch.uint8)
        return TensorImageDataset(images, torch.arange(count) % 2, num_classes=2)

    assert len(load_dataset("test_own_images_dots", "test", count=6)) == 6
    assert latentar.register_dataset is register_dataset
    with pytest.raises(FieldError, match="option count must be an integer >= 1, got 0"):
        load_dataset("test_own_images_dots", "test", count=0)
    with pytest.raises(ValueError, match="dataset 'test_own_images_dots' is already registered"):
        register_dataset("test_own_images_dots")(dots)

    register_dataset("test_own_images_plain")(lambda split, root: torch.utils.data.TensorDataset(torch.zeros(2)))
    with pytest.raises(TypeError, match="loaded a TensorDataset without shape, num_symbols, num_classes"):
        load_dataset("test_own_images_plain", "train")
    with pytest.raises(ValueError, match="a dataset name must be a non-empty string"):
        register_dataset("")
    assert "test_own_images_dots" in DATASETS

"""Code grids on disk: the manifest round trip, memory-mapped reading, and mismatch errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import latentar
from latentar.data import TensorImageDataset, load_dataset
from latentar.data.codes import CodeDataset, CodesMismatchError, check_codes_match, encode_dataset, read_manifest
from latentar.files import WriteError
from latentar.vqvae import VQVAE


def image_set(n: int, seed: int, shape=(1, 8, 8)) -> TensorImageDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    return TensorImageDataset(images, torch.arange(n) % 3, num_classes=3)


def fitted(**overrides) -> VQVAE:
    torch.manual_seed(0)
    model = VQVAE((1, 8, 8), preset="tiny", **overrides)
    model.loss(image_set(6, seed=9).images)  # one training pass: k-means init and an EMA step
    return model.eval()


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    folder = tmp_path_factory.mktemp("codes")
    model, train, test = fitted(), image_set(10, seed=1), image_set(7, seed=2)
    encode_dataset(model, train, folder, "train", source="toy", batch_size=4, progress=False)
    encode_dataset(model, test, folder, "test", source="toy", batch_size=4, progress=False)
    return folder, model, train, test


def test_manifest_round_trip(flat):
    folder, model, train, test = flat
    manifest = read_manifest(folder)
    assert manifest == json.loads((folder / "manifest.json").read_text())
    assert manifest["vqvae_fingerprint"] == model.fingerprint()
    assert manifest["grids"] == {"codes": {"num_symbols": 8, "shape": [4, 4]}}
    assert manifest["num_classes"] == 3 and manifest["vqvae"] == model.config_dict()
    assert manifest["splits"]["train"] == {"count": 10, "source": "toy", "labels": "train_labels.npy",
                                           "files": {"codes": "train_codes.npy"}, "same_as_training": None}
    stored = np.load(folder / "test_codes.npy")
    assert stored.dtype == np.uint16 and stored.shape == (7, 4, 4)
    assert torch.equal(torch.from_numpy(stored.astype(np.int64)), model.encode(test.images))


def test_code_dataset_reads_codes_and_labels(flat):
    folder, model, train, _ = flat
    codes = CodeDataset(folder, "train", vqvae=model)
    assert isinstance(codes.codes, np.memmap), "memory-mapped, not loaded"
    assert len(codes) == 10 and codes.shape == (1, 4, 4) and codes.num_symbols == 8
    assert codes.num_classes == 3 and codes.symbols == "codes" and codes.level == "codes"
    assert codes.fingerprint == model.fingerprint() and codes.context_shape is None
    x, label = codes[4]
    assert x.dtype == torch.long and x.shape == (1, 4, 4) and label == 4 % 3
    batch_x, batch_labels = next(iter(DataLoader(codes, batch_size=10)))
    assert torch.equal(batch_x[:, 0], model.encode(train.images))
    assert torch.equal(batch_labels, train.labels)


def test_a_prior_trains_on_the_codes(flat):
    folder, _, _, _ = flat
    codes = CodeDataset(folder, "train")
    prior = latentar.build_prior("pixelcnn", codes.shape, codes.num_symbols, symbols="codes", preset="tiny")
    codes.check_prior(prior)
    x, _ = next(iter(DataLoader(codes, batch_size=5)))
    assert torch.isfinite(prior.loss(x))
    wrong = latentar.build_prior("pixelcnn", codes.shape, 16, symbols="codes", preset="tiny")
    with pytest.raises(CodesMismatchError, match="of 16 symbols.*of 8 symbols"):
        codes.check_prior(wrong)
    pixels = latentar.build_prior("pixelcnn", (1, 4, 4), 8, preset="tiny")
    with pytest.raises(CodesMismatchError, match="pixels"):
        codes.check_prior(pixels)


def test_another_vqvae_is_refused(flat):
    folder, model, train, _ = flat
    other = fitted(beta=0.5)
    with pytest.raises(CodesMismatchError, match=model.fingerprint()):
        CodeDataset(folder, "train", vqvae=other)
    with pytest.raises(CodesMismatchError, match="made them"):
        check_codes_match(other, read_manifest(folder))
    with pytest.raises(CodesMismatchError):
        encode_dataset(other, train, folder, "train", progress=False)


def test_encoding_again_keeps_the_split(flat):
    folder, model, train, _ = flat
    before = (folder / "train_codes.npy").stat().st_mtime_ns
    encode_dataset(model, train, folder, "train", progress=False)
    assert (folder / "train_codes.npy").stat().st_mtime_ns == before


def test_hierarchical_levels_and_context(tmp_path):
    model, data = fitted(hierarchical=True, top_codebook_size=5), image_set(6, seed=3)
    manifest = encode_dataset(model, data, tmp_path, "train", progress=False)
    assert manifest["grids"] == {"bottom": {"num_symbols": 8, "shape": [4, 4]},
                                 "top": {"num_symbols": 5, "shape": [2, 2]}}
    expected = model.encode(data.images)
    top = CodeDataset(tmp_path, "train", level="top")
    assert top.shape == (1, 2, 2) and top.num_symbols == 5
    assert torch.equal(torch.stack([top[i][0][0] for i in range(6)]), expected["top"])
    bottom = CodeDataset(tmp_path, "train", level="bottom", context="top")
    assert bottom.context_shape == (2, 2) and bottom.context_symbols == 5
    x, label, context = bottom[2]
    assert x.shape == (1, 4, 4) and label == 2 and context.dtype == torch.long
    assert torch.equal(x[0], expected["bottom"][2]) and torch.equal(context, expected["top"][2])
    with pytest.raises(ValueError, match="choose one"):
        CodeDataset(tmp_path, "train")
    with pytest.raises(ValueError, match="unknown level 'codes'"):
        CodeDataset(tmp_path, "train", level="codes")
    with pytest.raises(ValueError, match="no 'test' codes"):
        CodeDataset(tmp_path, "test", level="top")


def test_bad_folders_and_datasets(tmp_path):
    with pytest.raises(FileNotFoundError, match="latentar encode"):
        CodeDataset(tmp_path, "train")
    model = fitted()
    with pytest.raises(ValueError, match=r"\(1, 16, 16\) but the VQ-VAE takes \(1, 8, 8\)"):
        encode_dataset(model, image_set(2, seed=0, shape=(1, 16, 16)), tmp_path, "train", progress=False)


def test_command_line_chain(tmp_path, capsys):
    """train-vqvae -> encode -> train-prior on the codes, on a folder of 16×16 images."""
    from PIL import Image

    from latentar.cli import main

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 8), ("test", 4)):
        (tmp_path / "images" / split).mkdir(parents=True)
        for i in range(n):
            pixels = torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8, generator=g).numpy()
            Image.fromarray(pixels).save(tmp_path / "images" / split / f"{i}.png")
    common = ["--data-root", str(tmp_path / "images"), "--steps", "2", "--batch-size", "4"]
    run, codes, prior = tmp_path / "vq", tmp_path / "codes", tmp_path / "prior"
    assert main(["train-vqvae", "--data", "image_folder", "--out", str(run), "--preset", "tiny",
                 "--codebook-size", "6", "--arch", "hidden=4", *common]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["vqvae"]["codebook_size"] == 6 and summary["vqvae"]["hidden"] == 4
    assert {"mse", "psnr", "perplexity", "codes_used"} <= set(summary["test"])
    assert (run / "reconstructions.png").is_file()
    assert main(["encode", "--vqvae", str(run), "--data", "image_folder", "--out", str(codes),
                 "--data-root", str(tmp_path / "images")]) == 0
    manifest = read_manifest(codes)
    assert manifest["vqvae_fingerprint"] == summary["fingerprint"] == VQVAE.from_pretrained(run / "model").fingerprint()
    assert manifest["splits"]["test"]["count"] == 4 and manifest["grids"]["codes"]["shape"] == [32, 32]
    capsys.readouterr()
    assert main(["train-prior", "--data", str(codes), "--prior", "pixelcnn", "--preset", "tiny",
                 "--out", str(prior), "--steps", "1", "--batch-size", "4"]) == 0
    assert "bits_per_code" in json.loads(capsys.readouterr().out)
    source = json.loads((prior / "model" / "codes_source.json").read_text())
    assert source == {"vqvae_fingerprint": summary["fingerprint"], "level": "codes", "tokenizer": "vqvae"}
    card = (prior / "model" / "README.md").read_text()  # names the VQ-VAE, never the local code folder
    assert f"fingerprint `{summary['fingerprint']}`" in card and str(tmp_path) not in card
    assert "latentar eval --model path/to/this/folder --data codes" in card
    assert main(["train-prior", "--data", str(tmp_path), "--prior", "pixelcnn", "--out", str(prior)]) == 2
    assert "without manifest.json" in capsys.readouterr().err


def test_load_dataset_opens_a_code_folder_by_its_path(tmp_path):
    model = VQVAE((1, 8, 8), preset="tiny")
    encode_dataset(model, image_set(4, seed=0), tmp_path, "train", progress=False)
    codes = load_dataset(str(tmp_path), "train")
    assert isinstance(codes, CodeDataset) and codes.shape == (1, 4, 4) and len(codes) == 4
    with pytest.raises(TypeError, match="take no dataset options"):
        load_dataset(str(tmp_path), "train", size=8)
    with pytest.raises(ValueError, match="level='top' picks a level of code grids"):
        load_dataset("mnist", "train", level="top")


def test_codes_on_a_full_disk_are_a_write_error_that_leaves_nothing_half_written(small_disk):
    disk, fill = small_disk
    model, data = fitted(), image_set(4096, seed=0)  # 4096 grids of 4×4 uint16 codes: 128 KiB
    filler = fill()
    filler.write_bytes(bytes(filler.stat().st_size - (64 << 10)))  # leave 64 KiB: too little for the codes
    with pytest.raises(WriteError, match=rf"cannot write {disk / 'codes'}: No space left on device"):
        encode_dataset(model, data, disk / "codes", "train", batch_size=512, progress=False)
    assert not [p.name for p in (disk / "codes").iterdir()]
    filler.unlink()
    manifest = encode_dataset(model, data, disk / "codes", "train", batch_size=512, progress=False)
    assert manifest["splits"]["train"]["count"] == 4096
    assert sorted(p.name for p in (disk / "codes").iterdir()) == ["manifest.json", "train_codes.npy",
                                                                 "train_labels.npy"]


def hostile_copy(flat, tmp_path, damage) -> Path:
    folder = tmp_path / "codes"
    shutil.copytree(flat[0], folder)
    damage(folder)
    return folder


def point_outside(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["splits"]["train"]["files"]["codes"] = "../elsewhere.npy"
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, message", [
    (lambda f: ((f / "train_codes.npy").unlink(), os.mkfifo(f / "train_codes.npy")), "is missing or not a regular"),
    (lambda f: ((f / "train_labels.npy").unlink(), (f / "train_labels.npy").symlink_to("/dev/zero")),
     "is missing or not a regular"),
    (point_outside, "names '../elsewhere.npy', not a file of the folder"),
    (lambda f: (f / "train_codes.npy").write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': '<u2"), "is not a .npy array"),
    (lambda f: np.save(f / "train_codes.npy", np.zeros((4, 4, 4), dtype=np.float32)), "holds float32"),
    (lambda f: (f / "manifest.json").write_text("[" * 100_000), "nested too deeply"),
])
def test_a_hostile_code_folder_is_refused_naming_the_file(flat, tmp_path, damage, message):
    folder = hostile_copy(flat, tmp_path, damage)
    with pytest.raises(ValueError, match=message):  # never hangs on a FIFO, never reads outside the folder
        CodeDataset(folder, "train")

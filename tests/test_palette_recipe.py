"""A recipe with a [palette] tokenizer end to end on a tiny generated image folder: the palette is
fitted (not trained), the dataset encoded to palette tokens, an Image GPT style Transformer trained
on them and its samples decoded; the scores say they are per palette token; the commands that take
a VQ-VAE folder take the palette's."""

from __future__ import annotations

import json

import pytest
import torch
from recipe_cases import write_recipe

import latentar
from latentar.cli import main
from latentar.config import RecipeError, load_recipe
from latentar.data.codes import PALETTE_TOKENS
from latentar.plan import validate
from latentar.runs import run_recipe
from latentar.runs.curves import PALETTE_UNIT, stage_curves
from latentar.runs.report import run_row
from latentar.vqvae import Palette

IGPT = {"name": "transformer", "preset": "tiny", "arch": {"norm": "rms", "activation": "gelu2", "zero_head": True}}
PALETTE = {"vqvae": None, "vqvae_train": None, "palette": {"num_colors": 8, "kmeans_iters": 2, "fit_pixels": 600},
           "prior": IGPT, "prior_train": {"steps": 2, "batch_size": 8}, "sampling": {"n": 4, "nrow": 2,
                                                                                   "reconstructions": 4}}


@pytest.mark.slow
def test_a_palette_recipe_fits_encodes_trains_and_decodes(tmp_path, image_folder, capsys):
    recipe = write_recipe(tmp_path, image_folder, **PALETTE)
    out = tmp_path / "run"
    assert main(["--quiet", "run", str(recipe), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for name in ("palette/model/config.json", "palette/summary.json", "codes/manifest.json", "prior/model/config.json",
                 "samples.png", "reconstructions.png"):
        assert (out / name).is_file(), name
    assert not (out / "vqvae").exists() and "vqvae" not in summary
    palette = latentar.load(out / "palette")
    assert isinstance(palette, Palette) and palette.image_shape == (3, 8, 8) and palette.colors.shape == (8, 3)
    record = summary["palette"]
    assert record["stage"] == "palette" and record["fingerprint"] == palette.fingerprint() and not record["reused"]
    assert 0 < record["psnr"] < 60 and record["palette"]["num_colors"] == 8
    prior = latentar.load(out / "prior")
    assert prior.spec.shape == (1, 8, 8) and prior.spec.num_symbols == 8 and prior.arch.norm == "rms"
    assert summary["prior"]["tokens"] == PALETTE_TOKENS and "bits_per_code" in summary["prior"]
    assert PALETTE_TOKENS in (out / "prior" / "model" / "README.md").read_text()  # its model card's test metrics
    row = run_row(out)
    assert row["bits_per_palette_token"] == pytest.approx(summary["prior"]["bits_per_code"])
    assert row["bits_per_code"] is None and row["psnr"] == record["psnr"]
    assert [panel.unit for panel in stage_curves(out, ["prior"])] == [PALETTE_UNIT]  # curves.png's axis
    alone = run_row(out / "palette")  # the stage folder on its own
    assert alone["psnr"] == record["psnr"] and alone["parameters"] == 0 and alone["updates"] == 0

    codes = json.loads((out / "codes" / "manifest.json").read_text())
    assert codes["tokenizer"] == "palette" and codes["vqvae_fingerprint"] == palette.fingerprint()
    again = run_recipe(load_recipe(recipe), out)
    assert again["palette"]["reused"] and again["prior"]["reused"]
    with pytest.raises(RecipeError, match=r"palette was made by another recipe \(changed: palette.num_colors\)"):
        run_recipe(load_recipe(recipe, ["palette.num_colors=6"]), out)

    png = tmp_path / "s.png"
    assert main(["--quiet", "sample", "--prior", str(out / "prior"), "--vqvae", str(out / "palette"), "-n", "2",
                 "--save-codes", "--out", str(png)]) == 0 and png.is_file()
    assert main(["--quiet", "encode", "--vqvae", str(out / "palette"), "--data", "image_folder", "--data-root",
                 str(image_folder), "--data-option", "size=8", "--out", str(tmp_path / "codes")]) == 0
    capsys.readouterr()
    assert main(["eval", "--model", str(out / "prior"), "--data", str(tmp_path / "codes")]) == 0
    assert PALETTE_TOKENS in capsys.readouterr().out


def test_a_recipe_takes_one_tokenizer(tmp_path, image_folder):
    both = write_recipe(tmp_path, image_folder, **{**PALETTE, "vqvae": {"preset": "tiny"}})
    with pytest.raises(RecipeError, match=r"\[palette\] and \[vqvae\] are two tokenizers"):
        load_recipe(both)
    trains = write_recipe(tmp_path, image_folder, **{**PALETTE, "vqvae_train": {"steps": 1}})
    with pytest.raises(RecipeError, match=r"\[vqvae_train\] has nothing to train: a \[palette\] is fitted"):
        load_recipe(trains)
    with pytest.raises(RecipeError, match="palette.num_colors must be an integer"):
        load_recipe(write_recipe(tmp_path, image_folder, **{**PALETTE, "palette": {"num_colors": 1}}))


def test_a_palette_folder_serves_as_vqvae_path(tmp_path, image_folder):
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    Palette(num_colors=6).fit(images).save(tmp_path / "palette")
    given = {**PALETTE, "palette": None, "vqvae": {"path": str(tmp_path / "palette")}}
    plan = validate(load_recipe(write_recipe(tmp_path, image_folder, **given)))
    assert plan.grids == [(6, (8, 8))] and plan.stages[0].build["num_symbols"] == 6


def test_fit_palette_command(tmp_path, image_folder, capsys):
    out = tmp_path / "palette"
    command = ["fit-palette", "--data", "image_folder", "--data-root", str(image_folder), "--data-option", "size=8",
               "--num-colors", "8", "--kmeans-iters", "2", "--fit-pixels", "300", "--out", str(out)]
    capsys.readouterr()
    assert main(command) == 0
    printed = json.loads(capsys.readouterr().out)
    palette = latentar.load(out)
    assert printed["fingerprint"] == palette.fingerprint() and printed["count"] == 8 and printed["psnr"] > 0
    assert palette.config.num_colors == 8 and palette.config.fit_pixels == 300
    assert (out / "reconstructions.png").is_file() and (out / "summary.json").is_file()
    assert main(command) == 2 and "already holds a stage" in capsys.readouterr().err
    assert main([*command, "--overwrite", "--seed", "3"]) == 0 and latentar.load(out).config.seed == 3
    assert main([*command[:-2], "--num-colors", "1", "--out", str(tmp_path / "p")]) == 2
    assert "palette.num_colors must be an integer in [2, 65536], got 1" in capsys.readouterr().err

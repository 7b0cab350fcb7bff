"""Recipes: TOML in, JSON out, typed ``--set`` overrides, and validation errors that name the key."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest
from recipe_cases import write_recipe

from latentar.config import (
    PriorConfig,
    Recipe,
    RecipeError,
    apply_override,
    load_recipe,
    recipe_from_dict,
    recipe_to_dict,
)
from latentar.plan import validate
from latentar.priors import PriorSpec

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.toml"))

def test_every_shipped_recipe_parses_and_round_trips_through_json():
    assert {p.name for p in RECIPES} >= {
        "mnist-vqvae-pixelsnail.toml", "mnist-vqvae-gated-pixelcnn.toml", "fashion-mnist-vqvae-pixelsnail.toml",
        "binarized-mnist-pixelcnn.toml", "binarized-mnist-gated-pixelcnn.toml", "cifar10-pixelcnn-pp.toml",
        "cifar10-vqvae-pixelsnail.toml", "cifar10-vqvae2-pixelsnail.toml"}
    for path in RECIPES:
        recipe = load_recipe(path)
        assert recipe_from_dict(json.loads(json.dumps(recipe_to_dict(recipe)))) == recipe, path.name


def test_recipe_reads_sections_and_presets(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path))
    assert recipe.mode == "codes" and recipe.vqvae.codebook_size == 8 and recipe.vqvae.downsample == 1
    assert recipe.prior_train.steps == 3 and recipe.sampling.n == 64  # defaults fill the rest
    pixels = recipe_from_dict({"data": {"name": "mnist"}, "prior": {"name": "pixelcnn"}, "prior_train": {}})
    assert pixels.mode == "pixels" and pixels.vqvae is None


@pytest.mark.parametrize("extra, message", [
    ("[vqvae_trian]\nsteps = 2\n", r"unknown section \[vqvae_trian\]"),
    ("[sampling]\ntemprature = 0.5\n", r"unknown key sampling.temprature; \[sampling\] takes: n, nrow"),
    ("[sampling]\ntop_k = 'ten'\n", r"sampling.top_k must be an integer \(or none\), got 'ten'"),
    ("[sampling]\nseed = 1.5\n", r"sampling.seed must be an integer, got 1.5"),
    ("[sampling]\nnrow = 1000000000000\n", r"sampling.nrow must be an integer in \[1, 1024\]"),
    ("[sampling]\nseed = true\n", r"sampling.seed must be an integer, got True"),
    ("[bottom_prior]\nname = 'pixelcnn'\n", r"\[bottom_prior\] and \[bottom_prior_train\] go together"),
])
def test_bad_recipes_name_the_key(tmp_path, extra, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write_recipe(tmp_path, extra=extra))


@pytest.mark.parametrize("content, message", [
    ("x = " + "[" * 100_000 + "]" * 100_000 + "\n", "is nested too deeply"),
    ("[data]\nname = 'caf\xe9'\n".encode("latin-1"), "is not UTF-8 text"),
    (b"# " + b"x" * (2 << 20), "is larger than the 1048576 bytes"),
    ("[data\n", "is not valid TOML"),
])
def test_an_unreadable_recipe_is_named(tmp_path, content, message):
    path = tmp_path / "bad.toml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(RecipeError, match=rf"recipe {path} {message}"):
        load_recipe(path)


def test_section_checks_name_the_section(tmp_path):
    with pytest.raises(RecipeError, match=r"\[prior_train\]: TrainConfig.steps must be an integer >= 1"):
        load_recipe(write_recipe(tmp_path), ["prior_train.steps=0"])
    with pytest.raises(RecipeError, match="vqvae.path reuses a trained VQ-VAE; vqvae.preset cannot"):
        load_recipe(write_recipe(tmp_path), ["vqvae.path=somewhere"])
    with pytest.raises(RecipeError, match=r"vqvae.preset 'huge' is unknown; presets: tiny, mnist"):
        load_recipe(write_recipe(tmp_path), ["vqvae.preset=huge"])
    with pytest.raises(RecipeError, match="no \\[prior\\] section"):
        recipe_from_dict({"data": {}})
    with pytest.raises(RecipeError, match=r"\[vqvae_train\] needs a \[vqvae\] section"):
        recipe_from_dict({"data": {}, "prior": {}, "prior_train": {}, "vqvae_train": {}})


def test_set_overrides_are_parsed_by_the_field_type(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path), [
        "prior_train.steps=7", "prior_train.lr=0.01", "sampling.temperature=1", "sampling.top_k=none",
        "prior.class_conditional=true", "prior.arch.hidden=16", "data.name=1234", "vqvae.codebook_size=16",
        "prior_train.grad_clip=none", "prior.preset=none"])
    assert recipe.prior_train.steps == 7 and recipe.prior_train.lr == 0.01
    assert recipe.sampling.temperature == 1.0 and isinstance(recipe.sampling.temperature, float)
    assert recipe.sampling.top_k is None and recipe.prior.class_conditional is True
    assert recipe.prior.arch == {"hidden": 16} and recipe.data.name == "1234"  # strings stay strings
    assert recipe.vqvae.codebook_size == 16 and recipe.vqvae.hidden == 8  # on top of the preset
    assert recipe.prior.preset is None


@pytest.mark.parametrize("item, message", [
    ("sampling.temperature=hot", r"sampling.temperature must be a number, got 'hot'"),
    ("prior.steps=3", r"--set prior.steps: unknown key prior.steps; \[prior\] takes: name, preset"),
    ("priors.name=x", r"--set priors.name: unknown section \[priors\]"),
    ("prior_train.steps", r"--set expects section.key=value, got 'prior_train.steps'"),
    ("steps=3", r"--set expects section.key=value, got 'steps=3'"),
])
def test_bad_overrides_name_the_key(tmp_path, item, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write_recipe(tmp_path), [item])


def test_overrides_write_into_the_raw_sections():
    raw = {"prior": {"arch": {"hidden": 4}}}
    apply_override(raw, "prior.arch.num_blocks = 2")
    apply_override(raw, "vqvae.path=/models/vq")
    assert raw == {"prior": {"arch": {"hidden": 4, "num_blocks": 2}}, "vqvae": {"path": "/models/vq"}}


def test_the_prior_section_spells_the_prior_spec_fields_as_the_spec_does():
    """[prior] is PriorSpec's settings (same names, types, defaults) plus name, preset, arch and
    class_conditional; the data decide the other spec fields, and [prior_train] its augmentations."""
    spec, section = dataclass_fields(PriorSpec), dataclass_fields(PriorConfig)
    from_data = {"shape", "num_symbols", "num_classes", "symbols", "context_symbols", "context_shape", "augmentations"}
    assert set(spec) - from_data == set(section) - {"name", "preset", "arch", "class_conditional"}
    for name in set(spec) - from_data:
        assert section[name] == spec[name], name


def dataclass_fields(cls) -> dict:
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f.default if f.default_factory is dataclasses.MISSING else f.default_factory())
            for f in dataclasses.fields(cls)}


def test_validation_plans_the_stages(tmp_path, image_folder):
    plan = validate(load_recipe(write_recipe(tmp_path, image_folder), ["prior.class_conditional=true"]))
    assert plan.image_shape == (3, 8, 8) and plan.levels == 256 and plan.num_classes == 2
    assert plan.grids == [(8, (4, 4))]
    (stage,) = plan.stages
    assert stage.build["shape"] == (1, 4, 4) and stage.build["num_symbols"] == 8
    assert stage.build["symbols"] == "codes" and stage.build["num_classes"] == 2


def test_validation_of_a_hierarchical_recipe(tmp_path, image_folder):
    extra = "[bottom_prior]\nname = 'pixelsnail'\npreset = 'tiny'\n[bottom_prior_train]\nsteps = 2\n"
    recipe = load_recipe(write_recipe(tmp_path, image_folder, extra=extra), ["vqvae.hierarchical=true"])
    top, bottom = validate(recipe).stages
    assert top.build["shape"] == (1, 2, 2) and bottom.build["shape"] == (1, 4, 4)
    assert bottom.build["context_shape"] == (2, 2) and bottom.build["context_symbols"] == 8
    recipe.bottom_prior.name = "row_lstm"
    with pytest.raises(RecipeError, match="bottom_prior: prior 'row_lstm' does not take a spatial context"):
        validate(recipe)
    recipe.vqvae.hierarchical = False
    with pytest.raises(RecipeError, match="bottom_prior: a hierarchical VQ-VAE"):
        validate(recipe)


@pytest.mark.parametrize("overrides, message", [
    (["data.name=imagenet"], r"data.name: unknown dataset 'imagenet'"),
    (["data.options={colour = 1}"], r"data.options: dataset 'image_folder' has no option colour"),
    (["prior.name=pixelcnm"], r"prior: unknown prior 'pixelcnm'"),
    (["prior.arch.hiden=3"], r"prior: unknown argument\(s\) \['hiden'\]"),
    (["prior.preset=huge"], r"prior: unknown preset 'huge'"),
    (["prior.head=logistic_mixture"], r"prior: head 'logistic_mixture' models ordinal pixels"),
    (["vqvae.downsample=4"], r"vqvae: image size 8×8 is not divisible by 2\^downsample = 16"),
])
def test_validation_names_the_key(tmp_path, image_folder, overrides, message):
    with pytest.raises(RecipeError, match=message):
        validate(load_recipe(write_recipe(tmp_path, image_folder), overrides))


def test_a_missing_dataset_or_vqvae_is_reported_before_any_work(tmp_path, image_folder):
    with pytest.raises(RecipeError, match=r"data.name 'image_folder' cannot be found"):
        validate(load_recipe(write_recipe(tmp_path, tmp_path / "nowhere")))
    recipe = load_recipe(write_recipe(tmp_path, image_folder))
    recipe.vqvae, recipe.vqvae_path = None, str(tmp_path / "novq")
    with pytest.raises(RecipeError, match=r"vqvae.path: .*novq is not a folder"):
        validate(recipe)


def test_a_trained_vqvae_for_other_images_is_rejected(tmp_path, image_folder):
    from latentar.vqvae import VQVAE

    VQVAE((1, 8, 8), preset="tiny").save(tmp_path / "vq")
    raw = {"data": {"name": "image_folder", "root": str(image_folder), "options": {"size": 8}},
           "vqvae": {"path": str(tmp_path / "vq")}, "prior": {"name": "pixelcnn", "preset": "tiny"},
           "prior_train": {}}
    with pytest.raises(RecipeError, match=r"vqvae.path .* encodes \(1, 8, 8\) images with 256 levels, "
                                          r"but data.name 'image_folder' has \(3, 8, 8\)"):
        validate(recipe_from_dict(raw))
    raw["vqvae"]["path"] = str(tmp_path / "vq3")
    VQVAE((3, 8, 8), preset="tiny").save(tmp_path / "vq3")
    assert validate(recipe_from_dict(raw)).grids == [(8, (4, 4))]
    assert isinstance(recipe_from_dict(raw), Recipe)

"""Memory caps (``latentar.memory``, ``latentar.priors.footprint``): sizes are parsed one way,
the cap comes from --max-memory, LATENTAR_MAX_MEMORY or the machine, a request whose output
cannot fit is refused before anything is allocated, and smaller ones run in batches that fit."""

from __future__ import annotations

import json

import pytest
import torch
from prior_cases import tiny_prior
from recipe_cases import write_recipe

import latentar
from latentar import cli, memory
from latentar.evaluation import evaluate_prior
from latentar.generation import decode, generate
from latentar.memory import ENV_VAR, MemoryCapError, format_size, max_memory, memory_cap, parse_size
from latentar.priors import footprint
from latentar.priors.footprint import forward_bytes, grid_bytes, sampling_batch
from latentar.saving import CONFIG_FILE, NotAModelError, load
from latentar.vqvae import VQVAE

HUGE = 10**12


@pytest.fixture(autouse=True)
def no_cap_from_the_environment(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.mark.parametrize("text, size", [
    ("8GB", 8 * 10**9), ("8 gb", 8 * 10**9), ("8G", 8 * 10**9), ("512MiB", 512 * 2**20), ("1.5t", 15 * 10**11),
    (" 2 KiB ", 2048), ("100", 100), ("100B", 100), (".5k", 500), (7, 7),
])
def test_sizes_parse_in_decimal_and_binary_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "GB", "8XB", "-1", "0", "0.1", "1e3", "8 G B", None, True, 0])
def test_a_bad_size_is_refused_naming_where_it_came_from(text):
    with pytest.raises(ValueError, match="--max-memory must be"):
        parse_size(text, "--max-memory")


def test_sizes_print_in_three_digits():
    assert [format_size(s) for s in (999, 1000, 160e9, 6.27e12, 1e20)] == ["999 B", "1 KB", "160 GB", "6.27 TB",
                                                                            "1e+05 PB"]


def test_the_cap_is_the_flag_else_the_environment_else_a_fraction_of_the_machine(monkeypatch):
    total, _ = memory.total_memory("cpu")
    assert memory_cap() == int(total * memory.DEFAULT_FRACTION)
    monkeypatch.setenv(ENV_VAR, "3MiB")
    assert memory_cap() == 3 * 2**20
    with max_memory("2KB"):
        assert memory_cap() == 2000 and memory.cap_and_source()[1] == "--max-memory 2KB"
    assert memory_cap() == 3 * 2**20
    monkeypatch.setenv(ENV_VAR, "lots")
    with pytest.raises(ValueError, match=f"{ENV_VAR} must be a size such as 8GB"):
        memory_cap()


# ---- the estimates --------------------------------------------------------------------
@pytest.mark.parametrize("name", latentar.list_priors())
def test_activations_grow_linearly_with_the_grid_for_every_prior(monkeypatch, name):
    """The estimate measured at 4×4 and scaled to 12×12 is within 10 % of the one measured at
    12×12: the linear extrapolation ``forward_bytes`` relies on holds for every registered prior."""
    prior = tiny_prior(name, (3, 12, 12), 16)
    monkeypatch.setattr(footprint, "REFERENCE", 4)
    footprint.bytes_per_position.cache_clear()
    scaled = forward_bytes(prior, batch=3)
    monkeypatch.setattr(footprint, "REFERENCE", 12)
    footprint.bytes_per_position.cache_clear()
    measured = forward_bytes(prior, batch=3)
    footprint.bytes_per_position.cache_clear()
    assert measured > 3 * grid_bytes(prior.spec) and 0.9 * measured <= scaled <= 1.1 * measured


# ---- sampling -------------------------------------------------------------------------
def test_sampling_an_output_that_cannot_fit_is_a_value_error_naming_n():
    prior = tiny_prior("pixelcnn", (1, 4, 4), 2)
    with pytest.raises(ValueError, match=r"drawing n=1000000000000 grids needs about 128 TB .*memory cap of .*"
                                         r"--max-memory SIZE or LATENTAR_MAX_MEMORY=SIZE"):
        prior.sample(HUGE)
    with pytest.raises(MemoryCapError, match="n=1000000000000"):
        prior.naive_sample(HUGE)
    with pytest.raises(MemoryCapError, match=r"generate\(n=1000000000000\)"):
        generate(prior, n=HUGE)


def test_a_small_cap_refuses_a_modest_request_and_draws_the_rest_in_batches(monkeypatch):
    prior = tiny_prior("pixelcnn", (1, 8, 8), 2)
    one_batch = prior.sample(10, generator=torch.Generator().manual_seed(0))
    monkeypatch.setenv(ENV_VAR, "100KB")
    with pytest.raises(MemoryCapError, match=r"n=1000 grids .* memory cap of 100 KB \(LATENTAR_MAX_MEMORY=100KB\)"):
        prior.sample(1000)
    assert sampling_batch(prior, 10, False, "n") < 10  # split
    batches = [prior.sample(10, generator=torch.Generator().manual_seed(0)) for _ in range(2)]
    naive = prior.naive_sample(10, generator=torch.Generator().manual_seed(0))
    assert batches[0].shape == one_batch.shape == (10, 1, 8, 8)
    assert torch.equal(batches[0], batches[1]) and torch.equal(batches[0], naive)  # the same seed, the same cap
    monkeypatch.setenv(ENV_VAR, "1GB")
    assert torch.equal(prior.sample(10, generator=torch.Generator().manual_seed(0)), one_batch)


def test_completion_draws_in_batches_too(monkeypatch):
    prior = tiny_prior("pixelcnn", (1, 8, 8), 2)
    kept = torch.randint(0, 2, (10, 1, 8, 8))
    monkeypatch.setenv(ENV_VAR, "100KB")
    drawn = prior.redraw(kept, 3, generator=torch.Generator().manual_seed(0))
    assert drawn.shape == kept.shape and torch.equal(drawn[:, :, :3], kept[:, :, :3])


def test_decoding_in_batches_gives_the_same_images():
    vqvae = VQVAE((1, 8, 8), preset="tiny").eval()
    codes = torch.randint(0, vqvae.config.codebook_size, (7, 1, 4, 4))
    whole = decode(vqvae, (codes,))
    with max_memory(2 * vqvae.memory_floor()[0]):
        assert torch.equal(decode(vqvae, (codes,)), whole)


def test_scoring_runs_in_batches_that_fit():
    prior = tiny_prior("pixelcnn", (1, 8, 8), 2)
    data = [(torch.randint(0, 2, (1, 8, 8)), 0) for _ in range(12)]
    whole = evaluate_prior(prior, data, batch_size=12)
    with max_memory("100KB"):
        parts = evaluate_prior(prior, data, batch_size=12)
        with max_memory("1KB"), pytest.raises(MemoryCapError, match="scoring one grid needs about"):
            evaluate_prior(prior, data, batch_size=12)
    assert parts["count"] == whole["count"] and parts["nats"] == pytest.approx(whole["nats"], rel=1e-6)


# ---- loading --------------------------------------------------------------------------
def crafted(tmp_path, **spec) -> tuple:
    """A tiny saved prior whose config.json is then edited (the weights, so their sha256, stay)."""
    folder = tmp_path / "crafted"
    tiny_prior("pixelcnn", (1, 4, 4), 2).save(folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["config"]["spec"].update(spec)
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    return folder


def test_loading_a_model_whose_shape_cannot_fit_is_refused_before_allocation(tmp_path):
    folder = crafted(tmp_path, shape=[1, 100000, 100000])
    with pytest.raises(MemoryCapError, match=rf"loading {folder} \(the sizes in its config.json\) needs about "
                                             r".* TB \(its weights and one grid \(1, 100000, 100000\)"):
        load(folder)
    with max_memory("100TB"):  # the user may raise the cap
        assert load(folder).spec.shape == (1, 100000, 100000)


def test_a_config_whose_sizes_overflow_torch_is_one_clean_line(tmp_path):
    folder = tmp_path / "crafted"
    tiny_prior("pixelcnn", (1, 4, 4), 2).save(folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["config"]["arch"]["hidden"] = 2**62
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(NotAModelError) as raised:
        load(folder)
    assert "config.arch.hidden = 4611686018427387904" in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(ValueError, match=r"prior 'pixelcnn' is too large to build with pixelcnn.hidden = "):
        latentar.build_prior("pixelcnn", (1, 4, 4), 2, hidden=2**62)


# ---- the command line -----------------------------------------------------------------
def test_sample_refuses_a_crafted_model_folder_and_honours_max_memory(capsys, tmp_path):
    folder = crafted(tmp_path, shape=[1, 100000, 100000])
    assert cli.main(["sample", "--prior", str(folder), "-n", "1", "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"latentar: error: loading {folder} (the sizes in its config.json) needs about") and \
        "raise the cap with --max-memory SIZE" in err
    small = tmp_path / "small"
    tiny_prior("pixelcnn", (1, 8, 8), 2).save(small)
    argv = ["sample", "--prior", str(small), "-n", "12", "--out", str(tmp_path / "s.png"), "--max-memory"]
    assert cli.main([*argv, "100KB"]) == 0  # drawn in batches
    assert cli.main([*argv, "20KB"]) == 2 and "(--max-memory 20KB)" in capsys.readouterr().err
    assert memory.cap_and_source()[1] != "--max-memory 20KB"  # the flag held for that command only


@pytest.mark.parametrize("override, message", [
    ("vqvae.hidden=4611686018427387904", "vqvae: the VQ-VAE is too large to build with vqvae.hidden = "
                                         "4611686018427387904: a tensor size overflows"),
    ("sampling.n=1000000000000", "sampling.n = 1000000000000 needs about 320 TB (1000000000000 × (a grid "
                                 "(1, 4, 4) of int64 symbols and an image (3, 8, 8) of uint8)"),
])
def test_a_code_mode_recipe_is_refused_in_one_line_before_any_stage(capsys, tmp_path, image_folder, override,
                                                                     message):
    recipe, out = write_recipe(tmp_path, image_folder), tmp_path / "run"
    assert cli.main(["run", str(recipe), "--out", str(out), "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentar: error: ") and message in err and err.count("\n") == 1, err
    assert not out.exists()  # validated before any stage trained

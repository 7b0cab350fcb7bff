"""The trainer, the two-stage sampler and every command that runs a model, on the test device
(``LATENTAR_TEST_DEVICE``, default cpu; see conftest.py): training runs there, resumes there
exactly, the prior → VQ-VAE chain draws images from models that live there, and `sample`,
`complete`, `eval`, `encode` and `receptive-field` run there with ``--device``. Device names
this machine lacks are refused by name."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from prior_cases import binary_grids, tiny_prior
from recipe_cases import write_recipe
from safetensors.torch import load_file

import latentar
import latentar.data
from latentar import cli
from latentar.commands import evaluate as evaluate_command
from latentar.config import RecipeError, load_recipe
from latentar.data.codes import CodeDataset
from latentar.devices import resolve_device
from latentar.evaluation import evaluate_prior
from latentar.generation import complete, completion_grid, generate
from latentar.images import save_grid
from latentar.plan import validate
from latentar.priors import base
from latentar.training import TrainConfig, Trainer, prior_objective


def train(out, steps: int, resume: bool = False) -> Trainer:
    torch.manual_seed(0)
    data = binary_grids(32)
    prior = latentar.build_prior("gated_pixelcnn", (1, 4, 4), 2, preset="tiny")
    config = TrainConfig(steps=steps, batch_size=8, lr=1e-2, ema_decay=0.9, save_every=2, log_every=1)
    trainer = Trainer(prior, prior_objective, data, config, out,
                      evaluate=lambda model, acc: evaluate_prior(model, data, acc))
    trainer.fit(resume=resume)
    return trainer


def test_the_trainer_runs_and_resumes_exactly_on_the_device(tmp_path, device):
    whole = train(tmp_path / "whole", 4)
    assert whole.accelerator.device.type == device.type
    assert all(p.device.type == device.type for p in whole.model.parameters())
    train(tmp_path / "split", 2)
    resumed = train(tmp_path / "split", 4, resume=True)
    for (name, a), b in zip(whole.final_model().state_dict().items(), resumed.final_model().state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after resuming on {device}"
    exported = latentar.load(tmp_path / "whole" / "model", device=device)
    assert exported.device.type == device.type


def test_the_prior_to_decoder_chain_runs_on_the_device(device):
    torch.manual_seed(0)
    vqvae = latentar.VQVAE((1, 8, 8), latentar.VQVAE.make_config("tiny")).to(device).eval()
    (h, w), K = vqvae.grid_shapes["codes"], vqvae.codebook_sizes["codes"]
    prior = tiny_prior("pixelsnail", (1, h, w), K, symbols="codes", embed_dim=4, num_classes=2, device=device)
    drawn = generate(prior, vqvae, 4, labels=1, seed=0)
    again = generate(prior, vqvae, 4, labels=1, seed=0)
    assert drawn.images.shape == (4, 1, 8, 8) and drawn.images.dtype == torch.uint8
    assert torch.equal(drawn.images, again.images), "one seed, one sample on the device too"
    codes = drawn.symbols[0]
    assert codes.min() >= 0 and codes.max() < K


# ---- every command on the device (--device), and latentar.load(device=...) ----------------------
def run_cli(capsys, *argv) -> str:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


IMAGES = ("--data", "image_folder", "--data-option", "size=8", "--data-root")  # then the image_folder fixture


@pytest.fixture
def pixel_prior(tmp_path):
    """A tiny saved pixel prior for the 3×8×8 images of ``image_folder`` -> its folder."""
    tiny_prior("pixelcnn", (3, 8, 8), 256, hidden=4).save(tmp_path / "prior")
    return tmp_path / "prior"


def test_load_puts_every_tensor_on_the_device(pixel_prior, device):
    model = latentar.load(pixel_prior, device=str(device))
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {device.type}
    assert latentar.load(pixel_prior, device="auto").device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_sample_draws_on_the_device_in_passes_of_batch_size(capsys, tmp_path, pixel_prior, device, monkeypatch):
    passes = []
    draw = base.draw_grids
    monkeypatch.setattr(base, "draw_grids", lambda prior, x, *a, **k: (passes.append((len(x), prior.device.type)),
                                                                      draw(prior, x, *a, **k))[1])
    run_cli(capsys, "sample", "--prior", pixel_prior, "-n", 5, "--batch-size", 2, "--seed", 3, "--save-codes",
            "--out", tmp_path / "grid.png", "--device", device)
    assert passes == [(2, device.type), (2, device.type), (1, device.type)]
    drawn = load_file(str(tmp_path / "grid.codes.safetensors"))["pixels"]
    prior = latentar.load(pixel_prior, device=device)
    assert torch.equal(drawn, generate(prior, None, 5, seed=3, batch_size=2).symbols[0]), "drawn elsewhere"


def test_complete_redraws_on_the_device(capsys, tmp_path, pixel_prior, image_folder, device):
    run_cli(capsys, "complete", "--prior", pixel_prior, *IMAGES, image_folder,
            "--keep-rows", 5, "-n", 2, "--samples", 2, "--out", tmp_path / "cli.png", "--device", device)
    test = latentar.data.load_dataset("image_folder", "test", image_folder, size=8)
    images = torch.stack([test[i][0] for i in range(2)])
    result = complete(latentar.load(pixel_prior, device=device), images, 5, 2)
    save_grid(completion_grid(result)[0], tmp_path / "api.png", nrow=4)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "cli.png")), np.asarray(Image.open(tmp_path / "api.png")))


def test_eval_scores_on_the_device(capsys, pixel_prior, image_folder, device, monkeypatch):
    scored_on = []
    monkeypatch.setattr(evaluate_command, "evaluate_prior",
                        lambda model, *a, **k: (scored_on.append(model.device.type), evaluate_prior(model, *a, **k))[1])
    scores = json.loads(run_cli(capsys, "eval", "--model", pixel_prior, *IMAGES, image_folder, "--batch-size", 3,
                                "--device", device))
    assert scored_on == [device.type] and scores["count"] == 8 and scores["num_processes"] == 1
    test = latentar.data.load_dataset("image_folder", "test", image_folder, size=8)
    on_cpu = evaluate_prior(latentar.load(pixel_prior), test)
    assert scores["bits_per_dim"] == pytest.approx(on_cpu["bits_per_dim"], rel=1e-5)


def test_encode_runs_the_vqvae_on_the_device(capsys, tmp_path, image_folder, device, monkeypatch):
    torch.manual_seed(0)
    latentar.VQVAE((3, 8, 8), latentar.VQVAE.make_config("tiny")).save(tmp_path / "vqvae")
    encoded_on = set()
    encode = latentar.VQVAE.encode
    monkeypatch.setattr(latentar.VQVAE, "encode",
                        lambda self, images: (encoded_on.add(self.device.type), encode(self, images))[1])
    run_cli(capsys, "encode", "--vqvae", tmp_path / "vqvae", *IMAGES, image_folder,
            "--split", "test", "--out", tmp_path / "codes", "--device", device)
    assert encoded_on == {device.type}
    codes = CodeDataset(tmp_path / "codes", "test")
    test = latentar.data.load_dataset("image_folder", "test", image_folder, size=8)
    vqvae = latentar.load(tmp_path / "vqvae", device=device).eval()
    expected = vqvae.encode(torch.stack([image for image, _ in test])).cpu()  # (8, h, w)
    assert torch.equal(torch.stack([codes[i][0][0] for i in range(len(codes))]), expected)


def test_receptive_field_runs_on_the_device(capsys, tmp_path, pixel_prior, device):
    out = json.loads(run_cli(capsys, "receptive-field", "--model", pixel_prior, "--out", tmp_path / "field.png",
                             "--device", device))
    assert out["priors"] and (tmp_path / "field.png").is_file()


# ---- device names ---------------------------------------------------------------------------------
CUDA_COUNT = torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.parametrize("name, message", [
    ("tpu", "device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    ("cuda:x", "device must be auto, cpu, cuda or cuda:N, got 'cuda:x'"),
    (f"cuda:{CUDA_COUNT}", "torch sees no CUDA device" if CUDA_COUNT == 0 else f"torch sees {CUDA_COUNT} CUDA device"),
])
def test_a_device_this_machine_lacks_is_refused_by_name(name, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve_device(name)


def test_auto_and_cuda_name_their_index():
    if CUDA_COUNT == 0:
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="'cuda' was asked for, but torch sees no CUDA device"):
            resolve_device("cuda")
    else:
        assert resolve_device("auto").index is not None and resolve_device("cuda") == resolve_device("auto")
    assert resolve_device(" CPU ") == torch.device("cpu")


@pytest.mark.skipif(CUDA_COUNT > 0, reason="checks a machine without CUDA")
@pytest.mark.parametrize("command", ["sample", "complete", "eval", "encode", "receptive-field"])
def test_device_cuda_without_cuda_exits_2_with_a_clear_message(capsys, tmp_path, command):
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--device", "cuda", "--out", str(tmp_path / "x.png")])
    assert exited.value.code == 2
    assert "argument --device: device 'cuda' was asked for, but torch sees no CUDA device" in capsys.readouterr().err


def test_a_recipe_sampling_device_is_checked_before_any_work(tmp_path, image_folder):
    recipe = load_recipe(write_recipe(tmp_path, image_folder), ["sampling.device=tpu"])
    with pytest.raises(RecipeError, match="sampling.device: device must be auto, cpu, cuda or cuda:N, got 'tpu'"):
        validate(recipe)

"""The trainer and the two-stage sampler on the test device (``LATENTAR_TEST_DEVICE``,
default cpu; see conftest.py): training runs there, resumes there exactly, and the
prior → VQ-VAE chain draws images from models that live there."""

from __future__ import annotations

import torch
from prior_cases import tiny_prior
from torch.utils.data import TensorDataset

import latentar
from latentar.evaluation import evaluate_prior
from latentar.generation import generate
from latentar.training import TrainConfig, Trainer, prior_objective


def binary_grids(n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(n, 1, 4, 4, generator=g) < 0.3).to(torch.uint8)
    return TensorDataset(x, torch.zeros(n, dtype=torch.long))


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
    exported = latentar.load(tmp_path / "whole" / "model", map_location=device)
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

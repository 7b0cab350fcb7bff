"""What a run shows of its models: training previews (a grid image at every ``sample_every``
updates, ``Trainer(preview=...)``) and the VQ-VAE's reconstruction grids.

    preview = sample_preview(vqvae, n=16, nrow=4)          # preview(prior) -> uint8 (3, H', W')
    preview = reconstruction_preview(first_images(test, 16))  # preview(vqvae) -> uint8 (3, H', W')
    save_reconstructions(vqvae, first_images(test, 16), "reconstructions.png")
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from einops import rearrange, repeat
from torch.utils.data import Dataset

from latentar.data.subsets import dataset_size
from latentar.generation import generate
from latentar.images import image_grid, save_grid
from latentar.priors.base import Prior
from latentar.vqvae import Tokenizer


def first_images(dataset: Dataset, n: int) -> torch.Tensor:
    """The images of the first ``n`` items (all, when fewer) of a dataset of (uint8 image, ...)
    items -> uint8 (n, C, H, W)."""
    return torch.stack([dataset[i][0] for i in range(min(n, dataset_size(dataset)))])


def sample_preview(vqvae: Tokenizer | None = None, *, n: int = 16, nrow: int = 4, seed: int = 0, levels: int = 256,
                   top_prior: Prior | None = None) -> Callable[[Prior], torch.Tensor]:
    """A look at a prior while it trains: ``preview(prior)`` draws n grids with the fast sampler
    and a fixed seed (the same draws at every call of an unchanged prior), decodes them with the
    VQ-VAE in code mode, and returns the grid image uint8 (3, H', W'). A class-conditional prior
    draws rows of one image per class. With ``top_prior`` (VQ-VAE-2) the previewed prior is the
    bottom one, drawing under the top prior's codes."""
    def preview(prior: Prior) -> torch.Tensor:
        labels, per_row = None, nrow
        if prior.spec.num_classes is not None:
            per_row = prior.spec.num_classes
            labels = repeat(torch.arange(per_row), "k -> (r k)", r=max(1, round(n / per_row)))
        top, bottom = (prior, None) if top_prior is None else (top_prior, prior)
        drawn = generate(top, vqvae, n if labels is None else len(labels), labels, seed=seed, bottom_prior=bottom)
        return image_grid(drawn.images, per_row, levels)

    return preview


def reconstruction_preview(originals: torch.Tensor, nrow: int = 8) -> Callable[[Tokenizer], torch.Tensor]:
    """A look at a VQ-VAE while it trains: ``preview(vqvae)`` -> the grid image uint8 (3, H', W') of
    `reconstruction_rows` of the fixed images ``originals`` uint8 (n, C, H, W)."""
    return lambda vqvae: image_grid(reconstruction_rows(vqvae, originals, nrow), nrow, vqvae.levels)


def reconstruction_rows(vqvae: Tokenizer, originals: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """uint8 (n, C, H, W) -> (2·r·nrow, C, H, W): r rows of originals, each above a row of
    their VQ-VAE reconstructions (the last row padded with white)."""
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    both = torch.stack([originals, vqvae.reconstruct(originals).cpu()])  # (2, n, C, H, W)
    pad = -originals.shape[0] % nrow
    both = torch.cat([both, both.new_full((2, pad, *both.shape[2:]), vqvae.levels - 1)], 1)
    return rearrange(both, "two (r k) c h w -> (r two k) c h w", k=nrow)


def save_reconstructions(vqvae: Tokenizer, originals: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Write `reconstruction_rows` as one PNG grid."""
    return save_grid(reconstruction_rows(vqvae, originals, nrow), path, nrow=nrow, levels=vqvae.levels)

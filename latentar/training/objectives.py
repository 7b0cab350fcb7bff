"""Objectives: ``objective(model, batch) -> (loss scalar, {name: float or 0-dim tensor})``;
tensors stay on the device until the trainer logs them.

The trainer calls the objective inside the (possibly DDP-wrapped) forward pass, with the
bare model, so an objective may use any method of it (``prior.loss``, ``vqvae.loss``).
Prior batches are read by `latentar.evaluation.unpack_prior_batch` (images with labels,
or code grids with a spatial context).
"""

from __future__ import annotations

from typing import Any

import torch

from latentar.evaluation import bits_name, bits_per_dim, unpack_prior_batch


def prior_objective(prior, batch: Any) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
    """Mean negative log-likelihood in nats per symbol; also reported in bits per symbol, under the
    name the prior's evaluation uses (`bits_name`: bits_per_code for a code prior)."""
    x, cond = unpack_prior_batch(batch, prior.spec)
    loss = prior.loss(x, cond)
    return loss, {bits_name(prior.spec): bits_per_dim(loss.detach(), 1)}  # a tensor: read at log time


def vqvae_objective(vqvae, batch: Any) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
    """``vqvae.loss(images)`` on the images of an ``(images uint8 (B, C, H, W), labels)`` batch."""
    images = batch[0] if isinstance(batch, (tuple, list)) else batch
    return vqvae.loss(images)

"""Objectives: ``objective(model, batch) -> (loss scalar, {name: float or 0-dim tensor})``;
tensors stay on the device until the trainer logs them.

The trainer calls the objective inside the (possibly DDP-wrapped) forward pass, with the
bare model, so an objective may use any method of it (``prior.loss``, ``vqvae.loss``).
Prior batches are read by `latentar.evaluation.unpack_prior_batch` (images with labels,
or code grids with a spatial context).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import torch

from latentar.augmentations import num_augmentations
from latentar.evaluation import augmented, bits_name, bits_per_dim, unpack_prior_batch
from latentar.training.config import TrainConfig


def prior_objective(prior, batch: Any) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
    """Mean negative log-likelihood in nats per symbol; also reported in bits per symbol, under the
    name the prior's evaluation uses (`bits_name`: bits_per_code for a code prior)."""
    x, cond = unpack_prior_batch(batch, prior.spec)
    loss = prior.loss(x, cond)
    return loss, {bits_name(prior.spec): bits_per_dim(loss.detach(), 1)}  # a tensor: read at log time


def augmented_prior_objective(prior, batch: Any, *, augmentations: tuple[str, ...], rate: float,
                              conditioned: bool) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
    """``prior_objective`` of the batch with each example (and its spatial context) transformed by an
    augmentation id of ``augmentations`` (``latentar.augment``): with probability ``rate`` a uniform
    non-identity id, else the identity (id 0); ``conditioned``: the prior is told the ids."""
    x, cond = unpack_prior_batch(batch, prior.spec)
    chosen = torch.rand(len(x), device=x.device) < rate  # (B,): augmented at all
    drawn = torch.randint(1, num_augmentations(augmentations), (len(x),), device=x.device)  # (B,)
    ids = torch.where(chosen, drawn, torch.zeros_like(drawn))
    x, cond = augmented(x, cond, ids, augmentations)
    if not conditioned:
        cond = dataclasses.replace(cond, augment=None)
    loss = prior.loss(x, cond)
    return loss, {bits_name(prior.spec): bits_per_dim(loss.detach(), 1)}


def prior_objective_of(config: TrainConfig) -> Callable:
    """The objective of a prior trained under ``config``: ``prior_objective``, or with its
    distribution augmentation (``augment``, ``augment_rate``, ``augment_conditioning``)."""
    if not config.augment:
        return prior_objective
    return functools.partial(augmented_prior_objective, augmentations=config.augment, rate=config.augment_rate,
                             conditioned=config.augment_conditioning)


def vqvae_objective(vqvae, batch: Any) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
    """``vqvae.loss(images)`` on the images of an ``(images uint8 (B, C, H, W), labels)`` batch."""
    images = batch[0] if isinstance(batch, (tuple, list)) else batch
    return vqvae.loss(images)

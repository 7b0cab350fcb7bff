"""Scores: bits per dimension, nats per image, bits per code.

`bits_per_dim` is the one place where nats become bits. Scores of a split are sums of
nats and of dimensions over every item of the split (every process included), divided
once at the end: batch means are never averaged and no batch is dropped.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import torch
from accelerate.utils import reduce
from torch.utils.data import DataLoader, Dataset, Subset

from latentar.augmentations import augment
from latentar.data.subsets import dataset_size, split_notes
from latentar.nn.modes import eval_mode
from latentar.priors.base import check_integer_tensor
from latentar.priors.condition import Condition, as_condition
from latentar.priors.footprint import scoring_batch
from latentar.priors.spec import PriorSpec
from latentar.progress import progress_bar
from latentar.quantizers import CodeUsage
from latentar.vqvae.model import psnr

LN2 = math.log(2)


def bits_per_dim(nats: float | torch.Tensor, dims: float | torch.Tensor) -> float | torch.Tensor:
    """Total negative log-likelihood ``nats`` over ``dims`` symbols -> bits per symbol."""
    return nats / (dims * LN2)


def bits_name(spec: PriorSpec) -> str:
    """The name of a prior's bits per symbol, the same in training logs, evaluations, summaries and
    reports: "bits_per_code" for a prior over code grids, "bits_per_dim" for one over pixels."""
    return "bits_per_code" if spec.symbols == "codes" else "bits_per_dim"


class PriorBatch(NamedTuple):
    x: torch.Tensor  # symbols, long (B, C, H, W)
    cond: Condition  # what the prior is conditioned on, per grid


def unpack_prior_batch(batch: Any, spec: PriorSpec) -> PriorBatch:
    """A batch of symbol grids -> ``PriorBatch`` for a prior of ``spec``.

    Accepts ``(x, labels)`` from the image datasets, ``(x, labels, context)``, or a dict
    with key ``x`` and optional ``labels`` / ``context`` (code datasets). The condition keeps
    only what the prior takes (``as_condition(..., spec=spec)``): datasets always carry
    labels, and an unconditional prior drops them.
    """
    if isinstance(batch, dict):
        if "x" not in batch:
            raise ValueError(f"a dict batch needs key 'x' (symbols (B, C, H, W)); got keys {sorted(batch)}")
        x, labels, context = batch["x"], batch.get("labels"), batch.get("context")
    elif isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        x, labels, context = (*batch, None)[:3]
    else:
        raise TypeError("a prior batch must be (x, labels), (x, labels, context) or a dict with key 'x'; "
                        f"got {type(batch).__name__}")
    check_integer_tensor(x, "a batch's x", "(B, C, H, W) of symbols")
    return PriorBatch(x.long(), as_condition(Condition(labels, context), spec=spec))


@torch.no_grad()
def evaluate_prior(prior, data: Dataset | DataLoader, accelerator=None, *, batch_size: int = 256,
                   known: torch.Tensor | None = None, augment_id: int | None = None) -> dict:
    """Negative log-likelihood of a whole split under ``prior`` (in eval mode, no grad).

    ``data`` is a Dataset of ``(symbols (C, H, W), label)`` items (split exactly across
    the processes of ``accelerator``, an ``Accelerator`` or a ``PartialState``: process r of P
    scores items r, r + P, ..., and the sums of all P are added up) or a
    DataLoader that already yields this process's share. Returns nats (total), dims,
    count, nats_per_image (nats per item: per image, or per image's code grid for a code prior)
    and bits per symbol under `bits_name` (bits_per_dim, or bits_per_code for a code prior), plus
    the split's notes (`split_notes`: its binarization, or that it is the training images).

    With ``known`` (bool (H, W) over the prior's grid, True where given), every grid is scored
    on its other positions given the known ones (``Prior.log_prob(known=)``, exact): nats, dims
    and the bits count the unknown symbols only.

    With ``augment_id`` (a prior built with augmentations), every grid is transformed by that
    augmentation (``latentar.augment``) and scored under it: log p(augment(x) | id), the
    distribution augmentation paper's per-augmentation evaluation; None: the data as they are,
    under the identity (the data's own likelihood).

    A batch whose forward would not fit the memory cap is scored in parts that do
    (``priors.footprint.scoring_batch``): the same sums, up to float rounding.
    """
    loader = process_share(data, accelerator, batch_size)
    fit = scoring_batch(prior)  # grids per forward
    totals = torch.zeros(3, dtype=torch.float64, device=prior.device)  # nats, dims, count
    with eval_mode(prior):
        for batch in progress_bar(loader, desc="score", unit="batch"):
            for x, cond in split_batch(unpack_prior_batch(batch, prior.spec), fit):
                x, cond = x.to(prior.device), cond.map(lambda t: t.to(prior.device))
                if augment_id is not None:
                    ids = torch.full((len(x),), augment_id, dtype=torch.long, device=x.device)
                    x, cond = augmented(x, cond, ids, prior.spec.augmentations)
                nats = -prior.log_prob(x, cond, known=known).double().sum()
                dims = x.numel() if known is None else x.shape[0] * x.shape[1] * int((~known).sum())
                totals += torch.stack([nats, nats.new_tensor(dims), nats.new_tensor(x.shape[0])])
    if accelerator is not None:
        totals = reduce(totals, reduction="sum")
    nats, dims, count = totals.tolist()
    if count == 0:
        raise ValueError("evaluate_prior got an empty split")
    scores = {"nats": nats, "dims": int(dims), "count": int(count), "nats_per_image": nats / count,
              bits_name(prior.spec): bits_per_dim(nats, dims)}
    return {**scores, **split_notes(data.dataset if isinstance(data, DataLoader) else data)}


def augmented(x: torch.Tensor, cond: Condition, ids: torch.Tensor,
              augmentations: tuple[str, ...]) -> tuple[torch.Tensor, Condition]:
    """Grids x (B, C, H, W) and their condition, grid b transformed by augmentation ``ids[b]``
    (long (B,); a spatial context with its grid), the condition told the ids."""
    context = None if cond.context is None else augment(cond.context[:, None], ids, augmentations)[:, 0]
    return augment(x, ids, augmentations), dataclasses.replace(cond, context=context, augment=ids)


def split_batch(batch: PriorBatch, size: int) -> list[PriorBatch]:
    """A batch -> consecutive parts of at most ``size`` grids each."""
    return [PriorBatch(batch.x[start:start + size], batch.cond.map(lambda t: t[start:start + size]))
            for start in range(0, len(batch.x), size)]


def process_share(data: Dataset | DataLoader, accelerator=None, batch_size: int = 256) -> DataLoader:
    """This process's share of a split: items r, r + P, ... of a Dataset (P processes), in
    batches; a DataLoader is taken to yield this process's share already."""
    if isinstance(data, DataLoader):
        return data
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    return DataLoader(Subset(data, range(rank, dataset_size(data), world)), batch_size=batch_size)


@torch.no_grad()
def evaluate_vqvae(vqvae, data: Dataset | DataLoader, accelerator=None, *, batch_size: int = 256) -> dict:
    """Reconstruction and code usage of a VQ-VAE over a whole split of (uint8 images, label) items.

    Returns ``mse`` (mean squared error per pixel in the [-1, 1] scale), ``psnr`` (dB, from
    that total MSE; the same as with peak 1 in the [0, 1] scale) and ``count``, and per code
    level ``perplexity`` and ``codes_used`` (the fraction of the codebook used at least
    once), prefixed ``bottom_`` / ``top_`` for a hierarchical VQ-VAE. Sums run over every
    item and process and are divided once; then the split's notes (`split_notes`).
    """
    loader = process_share(data, accelerator, batch_size)
    totals = torch.zeros(3, dtype=torch.float64, device=vqvae.device)  # squared error, pixels, images
    usage = {level: CodeUsage(K, vqvae.device) for level, K in vqvae.codebook_sizes.items()}
    with eval_mode(vqvae):
        for images, *_ in progress_bar(loader, desc="score reconstructions", unit="batch"):
            recon, codes, _ = vqvae(images)  # floats (B, C, H, W) in the [-1, 1] scale, codes
            squared = (recon - vqvae.to_float(images)).double().pow(2).sum()
            totals += torch.stack([squared, squared.new_tensor(recon.numel()), squared.new_tensor(len(recon))])
            for level, grid in (codes.items() if isinstance(codes, dict) else [("codes", codes)]):
                usage[level].update(grid)
    if accelerator is not None:
        totals = reduce(totals, reduction="sum")
    squared, pixels, count = totals.tolist()
    if count == 0:
        raise ValueError("evaluate_vqvae got an empty split")
    scores = {"mse": squared / pixels, "psnr": psnr(squared / pixels), "count": int(count)}
    for level, counter in usage.items():
        prefix = "" if level == "codes" else f"{level}_"
        counter.all_reduce()
        scores[f"{prefix}perplexity"] = counter.perplexity()
        scores[f"{prefix}codes_used"] = counter.fraction_used()
    return {**scores, **split_notes(data.dataset if isinstance(data, DataLoader) else data)}


"""How much memory a prior's work needs, estimated before anything is allocated.

    forward_bytes(prior, batch)   activations of one forward of ``batch`` grids
    grid_bytes(prior.spec)        one grid of int64 symbols (C, H, W)
    sampling_batch(prior, n, ...) how many of n grids one sampler pass may draw at once
    scoring_batch(prior)          how many grids one scoring forward may take at once

The activations are measured, not modelled: the prior is rebuilt on the meta device at a
reference grid of at most ``REFERENCE`` × ``REFERENCE`` positions (the recurrent priors loop
over rows in Python, so a meta forward at the real height could be slow), its
``validated_params`` runs there under ``latentar.memory.leaf_output_bytes``, and the bytes
per position are scaled to H·W positions and to the batch. Every registered prior's
activations grow linearly with the positions: the bytes per position measured at 8×8,
16×16, 32×32 and 64×64 agree exactly for the convolutional and attention priors (attention
runs through fused kernels, no H·W × H·W matrix is kept) and within 3 % for the diagonal
BiLSTM. A spatial context is shrunk in the same ratio as the grid. The result is the right
order of magnitude, not an exact count (see ``latentar.memory``). Against the process's peak
RSS on a CPU ("small" presets, 16×16 grids, batches of about 1.5 GB by this estimate), a no-grad
forward's real peak was 2 to 4.5 times lower and ``prior.sample``'s 1.4 to 16 times lower; a
training step's peak was 0.7 to 3.6 times ``forward_bytes``, hence ``TRAINING_FACTOR``.
"""

from __future__ import annotations

import functools
import json
import math
from typing import TYPE_CHECKING, Any

import torch

from latentar.memory import batch_that_fits, check_fits, format_size, leaf_output_bytes, tensor_bytes
from latentar.priors.condition import Condition

if TYPE_CHECKING:  # base imports this module
    from latentar.priors.base import Prior

REFERENCE = 8  # rows and columns, at most, of the grid the activations are measured on
TRAINING_FACTOR = 4  # a training step's peak over forward_bytes: measured 0.7 (pixelcnn) to 3.6 (pixelcnn_pp)


def grid_bytes(spec: Any) -> int:
    """Bytes of one grid of symbols long (C, H, W) of a ``PriorSpec``."""
    return tensor_bytes(spec.shape, torch.long)


def forward_bytes(prior: Prior, batch: int = 1) -> int:
    """Bytes of the activations of one forward of ``batch`` grids (the sum of every leaf
    module's output, see the module docstring); ``prior`` may live on the meta device."""
    _, H, W = prior.spec.shape
    config_json = json.dumps(prior.config_dict(), sort_keys=True)
    per_position = bytes_per_position(type(prior), config_json)  # type: ignore[arg-type]  # a class is Hashable: python/mypy#11470
    return math.ceil(per_position * H * W * batch)


@functools.lru_cache(maxsize=64)
def bytes_per_position(cls: type[Prior], config_json: str) -> float:
    """Activation bytes per grid position at batch 1 of the prior ``cls.from_config`` builds from
    the JSON config, measured at the reference grid on the meta device (cached per config)."""
    config = json.loads(config_json)
    spec = config["spec"]
    C, H, W = spec["shape"]
    h, w = min(H, REFERENCE), min(W, REFERENCE)
    spec["shape"] = [C, h, w]
    if spec["context_shape"] is not None:
        ch, cw = spec["context_shape"]
        spec["context_shape"] = [math.ceil(ch * h / H), math.ceil(cw * w / W)]
    with torch.device("meta"):
        small = cls.from_config(config).eval()
    x = torch.zeros(1, C, h, w, dtype=torch.long, device="meta")
    cond = Condition(None if spec["num_classes"] is None else torch.zeros(1, dtype=torch.long, device="meta"),
                     None if spec["context_shape"] is None
                     else torch.zeros(1, *spec["context_shape"], dtype=torch.long, device="meta"))
    return leaf_output_bytes(small, lambda _: small.validated_params(x, cond)) / (h * w)


def floor_bytes(prior: Any) -> tuple[int, str]:
    """(bytes, what they are) of the least use of a prior: one grid and one forward at batch 1."""
    return grid_bytes(prior.spec) + forward_bytes(prior), f"one grid {tuple(prior.spec.shape)} and its forward"


def sampling_batch(prior: Any, n: int, guided: bool, what: str) -> int:
    """How many of the n grids a sampler pass draws at once so that it fits the memory cap of
    the prior's device; ``MemoryCapError`` naming ``what`` when the n grids drawn (kept until
    the end) and the work of drawing one grid cannot fit together.

    Drawing one grid needs one forward's activations (the fast steppers' layer caches are of
    that size, the naive stepper runs whole forwards) and two working copies of the grid;
    classifier-free guidance doubles the batch the network sees."""
    output = n * grid_bytes(prior.spec)
    per_grid = (2 if guided else 1) * (forward_bytes(prior) + 2 * grid_bytes(prior.spec))
    check_fits(output + per_grid, what, prior.device,
               f"{n} grids {tuple(prior.spec.shape)} of int64 symbols: {format_size(output)}, "
               f"and {format_size(per_grid)} to draw one")
    return min(n, batch_that_fits(per_grid, held=output, device=prior.device))


def scoring_batch(prior: Any, what: str = "scoring one grid") -> int:
    """How many grids one scoring (teacher-forced, no-grad) forward takes at once so that it fits
    the memory cap; ``MemoryCapError`` naming ``what`` when not even one grid does."""
    per_grid = forward_bytes(prior) + 2 * grid_bytes(prior.spec)
    check_fits(per_grid, what, prior.device, f"the activations of one forward of a grid {tuple(prior.spec.shape)}")
    return batch_that_fits(per_grid, device=prior.device)


def training_bytes(prior: Any, batch: int) -> tuple[int, str]:
    """(bytes, what they are) of one training step of ``batch`` grids: the weights, their
    gradients and Adam's two moments (4 × the weights), ``TRAINING_FACTOR`` × the forward's
    activations (those kept for the backward pass, the functional operations' among them, and
    their gradients), and the batch itself."""
    weights = sum(p.numel() * p.element_size() for p in prior.parameters())
    activations = TRAINING_FACTOR * forward_bytes(prior, batch)
    total = 4 * weights + activations + batch * grid_bytes(prior.spec)
    return total, (f"4 × {format_size(weights)} of weights, gradients and Adam moments, and "
                   f"{format_size(activations)} of activations and their gradients")

"""k-means for codebook initialisation, and the collectives that keep codebooks in sync.

The collectives are no-ops in a single process. Under several processes
(``torch.distributed`` initialised) every rank must call them in the same order.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def squared_distances(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """x (N, D), centers (K, D) -> squared Euclidean distances (N, K)."""
    return (x.pow(2).sum(1, keepdim=True)  # (N, 1)
            - 2 * x @ centers.t()  # (N, K)
            + centers.pow(2).sum(1)).clamp_min(0)  # (K,)


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """k-means++ seeding: x (N, D) -> k centers (k, D) drawn from the rows of x.

    Each new center is a row drawn with probability proportional to its squared
    distance to the nearest center so far; when every row already coincides with a
    center (fewer distinct rows than k), rows are drawn uniformly.
    """
    n = x.shape[0]
    first = torch.randint(n, (1,), generator=generator, device=x.device)
    centers = [x[first]]  # each (1, D)
    nearest = squared_distances(x, centers[0]).squeeze(1)  # (N,)
    for _ in range(1, k):
        weights = nearest if nearest.sum() > 0 else torch.ones_like(nearest)
        pick = torch.multinomial(weights, 1, generator=generator)  # (1,)
        centers.append(x[pick])
        nearest = torch.minimum(nearest, squared_distances(x, x[pick]).squeeze(1))
    return torch.cat(centers)  # (k, D)


def kmeans(x: torch.Tensor, k: int, iters: int = 10,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's algorithm from a k-means++ seeding.

    x (N, D) float -> (centers (k, D), counts (k,) of rows nearest each center).
    A cluster that empties keeps its previous center.
    """
    x = x.detach().float()
    centers = kmeans_plus_plus(x, k, generator)  # (k, D)
    for _ in range(iters):
        assign = squared_distances(x, centers).argmin(1)  # (N,)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)  # (k,)
        sums = torch.zeros_like(centers).index_add_(0, assign, x)  # (k, D)
        filled = counts > 0
        centers[filled] = sums[filled] / counts[filled, None]
    counts = torch.bincount(squared_distances(x, centers).argmin(1), minlength=k)
    return centers, counts


# ---- collectives -------------------------------------------------------------------
def world_size() -> int:
    """How many processes share the codebook: 1 unless torch.distributed is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def is_main_rank() -> bool:
    return world_size() == 1 or dist.get_rank() == 0


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place; returns it."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` on every process with rank ``src``'s copy, in place; returns it."""
    if world_size() > 1:
        dist.broadcast(tensor, src=src)
    return tensor

"""Vector quantization (VQ-VAE, van den Oord et al. 2017) with an EMA or loss-updated codebook.

Each encoder vector z is replaced by its nearest code e. The decoder's gradient is
copied straight through to z, and the commitment loss β·||z - sg(e)||² keeps z near
its code. The codebook moves either by exponential moving averages of the vectors
assigned to each code (the paper's appendix; counts Laplace-smoothed) or by the
codebook loss ||sg(z) - e||².

Codebooks start from k-means on the first training batch, and codes whose moving
usage falls below a threshold are re-seeded from the current batch. Under several
processes the assignment statistics are summed before the update, and rank 0 makes
every random choice (k-means, restarts) and broadcasts it, so all processes hold the
same codebook after every step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from latentar.quantizers.kmeans import all_reduce_sum_, broadcast_, is_main_rank, kmeans, squared_distances

UPDATES = ("ema", "loss")


class VectorQuantizer(nn.Module):
    """z (B, D, H, W) -> (quantized (B, D, H, W), indices long (B, H, W), loss scalar).

    Args:
        num_codes: K, the codebook size.
        dim: D, the width of a code vector.
        beta: weight of the commitment loss on the encoder.
        update: "ema" (codebook in buffers, moved by moving averages) or "loss"
            (codebook a parameter, moved by the codebook loss).
        decay: EMA decay of the usage counts and vector sums.
        eps: Laplace smoothing of the EMA counts.
        kmeans_iters: Lloyd iterations of the k-means init on the first training
            batch; None keeps the random init.
        restart_threshold: codes whose EMA usage (vectors per step, summed over
            processes) falls below this are re-seeded; 0 disables restarts.
    """

    codebook: torch.Tensor  # (K, D): a buffer ("ema") or a parameter ("loss")
    embed_sum: torch.Tensor  # (K, D) buffer, "ema" only
    cluster_size: torch.Tensor  # (K,) buffer
    initialized: torch.Tensor  # bool () buffer

    def __init__(self, num_codes: int, dim: int, *, beta: float = 0.25, update: str = "ema",
                 decay: float = 0.99, eps: float = 1e-5, kmeans_iters: int | None = 10,
                 restart_threshold: float = 1.0):
        super().__init__()
        if update not in UPDATES:
            raise ValueError(f"update must be one of {UPDATES}, got {update!r}")
        if num_codes < 2 or dim < 1:
            raise ValueError(f"need num_codes >= 2 and dim >= 1, got {num_codes} and {dim}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        self.num_codes, self.dim = num_codes, dim
        self.beta, self.update, self.decay, self.eps = beta, update, decay, eps
        self.kmeans_iters, self.restart_threshold = kmeans_iters, restart_threshold
        codebook = torch.randn(num_codes, dim)  # (K, D)
        if update == "ema":
            self.register_buffer("codebook", codebook)
            # Start as if each code had held one vector equal to itself.
            self.register_buffer("embed_sum", codebook.clone())  # (K, D)
        else:
            self.codebook = nn.Parameter(codebook)
        self.register_buffer("cluster_size", torch.ones(num_codes))  # (K,) EMA usage per step
        self.register_buffer("initialized", torch.tensor(kmeans_iters is None))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if z.dim() != 4 or z.shape[1] != self.dim or not z.is_floating_point():
            raise ValueError(f"z must be floats (B, {self.dim}, H, W), got {z.dtype} {tuple(z.shape)}")
        B, _, H, W = z.shape
        with torch.autocast(z.device.type, enabled=False):  # distances and statistics in float32
            flat = rearrange(z.float(), "b d h w -> (b h w) d")  # (N, D)
            if self.training and not bool(self.initialized):
                self._init_from_data(flat.detach())
            indices = squared_distances(flat.detach(), self.codebook.detach()).argmin(1)  # (N,)
            chosen = self.codebook[indices]  # (N, D); carries the codebook's gradient in "loss" mode
            loss = self.beta * F.mse_loss(flat, chosen.detach())
            if self.update == "loss":
                loss = loss + F.mse_loss(chosen, flat.detach())
            if self.training:
                self._update(flat.detach(), indices)
            quantized = chosen.detach() + (flat - flat.detach())  # exactly e, with d quantized / d z = I
        quantized = rearrange(quantized, "(b h w) d -> b d h w", b=B, h=H, w=W)
        return quantized, indices.view(B, H, W), loss

    def embed_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """indices long (B, H, W) in [0, K) -> code vectors (B, D, H, W)."""
        if indices.dim() != 3 or indices.dtype.is_floating_point:
            raise ValueError(f"indices must be an integer tensor (B, H, W), got {indices.dtype} "
                             f"{tuple(indices.shape)}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_codes):
            raise ValueError(f"indices must lie in [0, {self.num_codes}), got "
                             f"[{int(indices.min())}, {int(indices.max())}]")
        return rearrange(self.codebook[indices.long()], "b h w d -> b d h w")

    # ---- codebook updates (training only) ---------------------------------------
    @torch.no_grad()
    def _init_from_data(self, flat: torch.Tensor) -> None:
        """k-means on rank 0's batch, broadcast to every rank.

        The EMA statistics restart at one vector per code (its centre), as at construction:
        a centre that the moving encoder abandons falls below the restart threshold within
        steps, not after the hundreds a full cluster's count would take to decay.
        """
        centers = torch.zeros(self.num_codes, self.dim, device=flat.device)  # (K, D)
        if is_main_rank():
            assert self.kmeans_iters is not None  # initialized from the start without k-means
            centers = kmeans(flat, self.num_codes, self.kmeans_iters)[0]
        broadcast_(centers)
        self.codebook.data.copy_(centers)
        self.cluster_size.fill_(1.0)
        if self.update == "ema":
            self.embed_sum.copy_(centers)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        """One EMA step from flat (N, D) and its indices (N,), then dead-code restarts."""
        stats = torch.zeros(self.num_codes, self.dim + 1, device=flat.device, dtype=flat.dtype)
        stats[:, :-1].index_add_(0, indices, flat)  # (K, D) sums of assigned vectors
        stats[:, -1] = torch.bincount(indices, minlength=self.num_codes)  # (K,) counts
        all_reduce_sum_(stats)  # before the update: every rank sees the same statistics
        sums, counts = stats[:, :-1], stats[:, -1]
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.update == "ema":
            self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            n = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.eps) / (n + self.num_codes * self.eps) * n  # (K,)
            self.codebook.copy_(self.embed_sum / smoothed[:, None])
        if self.restart_threshold > 0:
            self._restart_dead_codes(flat)

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor) -> None:
        """Re-seed codes used less than the threshold with vectors of rank 0's batch."""
        dead = (self.cluster_size < self.restart_threshold).to(torch.uint8)  # (K,)
        broadcast_(dead)  # rank 0 decides, so every rank takes the same branch below
        dead = dead.bool()
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        seeds = torch.zeros(num_dead, self.dim, device=flat.device, dtype=flat.dtype)
        if is_main_rank():
            replace = num_dead > flat.shape[0]
            pick = torch.randperm(flat.shape[0], device=flat.device)[:num_dead] if not replace else \
                torch.randint(flat.shape[0], (num_dead,), device=flat.device)
            seeds.copy_(flat[pick])
        broadcast_(seeds)
        self.codebook.data[dead] = seeds
        self.cluster_size[dead] = self.restart_threshold
        if self.update == "ema":
            self.embed_sum[dead] = seeds * self.restart_threshold


class CodeUsage:
    """How often each code was used over a whole pass: perplexity and fraction used.

    ``update`` with every batch's indices, ``all_reduce`` once under several
    processes, then read the metrics; never average per-batch values.
    """

    def __init__(self, num_codes: int, device: torch.device | str | None = None):
        self.num_codes = num_codes
        self.counts = torch.zeros(num_codes, dtype=torch.long, device=device)  # (K,) uses per code

    def update(self, indices: torch.Tensor) -> None:
        """indices long (...) in [0, K)."""
        counts = torch.bincount(indices.flatten().long(), minlength=self.num_codes)
        if counts.numel() != self.num_codes:
            raise ValueError(f"indices exceed the codebook size {self.num_codes}")
        self.counts += counts.to(self.counts.device)

    def all_reduce(self) -> "CodeUsage":
        """Sum the counts over processes (a collective: every rank must call it)."""
        all_reduce_sum_(self.counts)
        return self

    def _probs(self) -> torch.Tensor:
        total = int(self.counts.sum())
        if total == 0:
            raise ValueError("no codes counted yet; call update(indices) first")
        return self.counts.double() / total  # (K,)

    def perplexity(self) -> float:
        """exp of the entropy of the code frequencies: K when uniform, 1 when one code."""
        p = self._probs()
        return math.exp(-float(torch.where(p > 0, p * p.log(), p.new_zeros(())).sum()))

    def fraction_used(self) -> float:
        """The share of the K codes used at least once."""
        return float((self._probs() > 0).double().mean())

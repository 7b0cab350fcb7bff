"""Locally masked convolutions (Jain, Abbeel, Pathak 2020, "Locally Masked Convolution for
Autoregressive Models").

A generation order is a permutation of the H·W flat positions p = h·W + w, a long (H·W,)
tensor listing them in the order they are generated (``latentar.priors.orders`` makes and
checks them). A locally masked conv gives every
location its own mask over the k×k taps of its filter: tap (dr, dc) of location p reads the
position p + dilation·(dr, dc), and is allowed iff that position lies in the grid and comes
strictly before p in the order. Type A (the first layer) masks the centre too; type B keeps it,
since a later layer's input at p depends only on positions before p. One network then serves
every order: only the masks change.

The layer is the masked im2col product (each location's patch times its mask, times the weight),
computed without the patches: one 1×1 conv gives every tap's output everywhere, and each location
sums, masked, the outputs of the positions its taps read. ``step`` computes
the output at one position of each grid only (each grid may be at its own position, in its own
order), from a map of the input: the fast sampler calls it once a position's inputs are final.

Masks are (k², H·W) floats (tap i = (i // k, i % k) of the kernel, row-major like ``F.unfold``),
built by ``lmconv_mask`` once per (order, H, W, kernel, dilation, kind, device) and cached.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("A", "B")


def padding(kernel: int, dilation: int) -> int:
    """The zero padding that keeps a k×k conv of this dilation 'same'-sized."""
    return dilation * (kernel - 1) // 2


def neighbour_map(values: torch.Tensor, H: int, W: int, kernel: int, dilation: int) -> torch.Tensor:
    """values (H·W,) of each position -> (k², H·W): tap i of location p holds the value at the
    position that tap reads, 0 outside the grid (``F.unfold`` of the map, exact in float64)."""
    grid = values.to(torch.float64).view(1, 1, H, W)
    return F.unfold(grid, kernel, dilation=dilation, padding=padding(kernel, dilation))[0]  # (k², H·W)


def check_geometry(kernel: int, dilation: int, kind: str) -> None:
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"a locally masked conv needs an odd kernel size >= 1, got {kernel}")
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    if kind not in KINDS:
        raise ValueError(f"the kind of a locally masked conv is 'A' or 'B', got {kind!r}")


def lmconv_mask(order: torch.Tensor, H: int, W: int, kernel: int = 3, dilation: int = 1,
                kind: str = "B", device: torch.device | str | None = None) -> torch.Tensor:
    """The masks of every location under ``order`` -> float (k², H·W) of 0/1, on ``device``
    (None: the order's): tap (dr, dc) of location p is 1 iff it reads a position inside the grid that comes
    before p in ``order``; kind "B" also keeps the centre tap. Cached: treat it as read-only."""
    check_geometry(kernel, dilation, kind)
    if order.shape != (H * W,):
        raise ValueError(f"an order of a {H}×{W} grid has shape ({H * W},), got {tuple(order.shape)}")
    key = order.detach().cpu().numpy().tobytes()
    return _cached_mask(key, H, W, kernel, dilation, kind, str(order.device if device is None else device))


@lru_cache(maxsize=256)
@torch.inference_mode(False)  # a normal tensor even when first asked for while sampling: training reuses it
def _cached_mask(order_bytes: bytes, H: int, W: int, kernel: int, dilation: int, kind: str,
                 device: str) -> torch.Tensor:
    order = torch.frombuffer(bytearray(order_bytes), dtype=torch.long)
    rank = torch.argsort(order)  # (H·W,): rank[order[t]] = t, the inverse permutation
    before = neighbour_map(rank + 1, H, W, kernel, dilation)  # rank + 1 of each read position; 0 outside
    allowed = (before >= 1) & (before <= rank[None].to(torch.float64))  # inside, and rank < rank of p
    if kind == "B":
        allowed[kernel * kernel // 2] = True
    return allowed.float().to(device)


def tap_reads(positions: torch.Tensor, H: int, W: int, kernel: int, dilation: int) -> torch.Tensor:
    """positions long (n,) of flat locations -> long (n, k²): the flat position each tap of
    that location reads (0 where it falls outside the grid, a tap every mask zeroes)."""
    return _neighbours(H, W, kernel, dilation, str(positions.device))[:, positions].T


@lru_cache(maxsize=64)
@torch.inference_mode(False)
def _neighbours(H: int, W: int, kernel: int, dilation: int, device: str) -> torch.Tensor:
    """(k², H·W) long: the flat position tap i of location p reads (0 where outside the grid)."""
    read = neighbour_map(torch.arange(1, H * W + 1), H, W, kernel, dilation)  # position + 1; 0 outside
    return (read.long() - 1).clamp(min=0).to(device)


class LocallyMaskedConv2d(nn.Module):
    """A 'same'-padded k×k conv whose every location has its own tap mask.

    ``forward(x (B, Cin, H, W), mask (k², H·W)) -> (B, Cout, H, W)``;
    ``kernel``, ``dilation`` and ``kind`` ("A" or "B") say which masks it takes (``lmconv_mask``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, dilation: int = 1,
                 kind: str = "B"):
        super().__init__()
        check_geometry(kernel, dilation, kind)
        self.kernel, self.dilation, self.kind = kernel, dilation, kind
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel * kernel))  # (O, I, k²)
        self.bias = nn.Parameter(torch.empty(out_channels))
        bound = 1 / math.sqrt(in_channels * kernel * kernel)  # nn.Conv2d's default initialisation
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    @property
    def taps(self) -> int:
        return self.kernel * self.kernel

    def _check_mask(self, mask: torch.Tensor, shape: tuple[int, ...]) -> None:
        if mask.shape != shape:
            raise ValueError(f"a {self.kernel}×{self.kernel} locally masked conv needs a mask of shape {shape} "
                             f"here, got {tuple(mask.shape)}")

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The masked im2col product without its (B, Cin·k², H·W) patches: one 1×1 conv gives every
        used tap's output at every position, y_i = W_i · x; location p then adds tap i's output at
        the position it reads, masked: out_p = bias + Σ_i mask_i,p · y_i[p + dilation·offset_i].
        Taps that every location masks are skipped."""
        B, _, H, W = x.shape
        self._check_mask(mask, (self.taps, H * W))
        pad, d, k = padding(self.kernel, self.dilation), self.dilation, self.kernel
        used = list(range(self.taps)) if mask.is_meta else mask.amax(1).nonzero().flatten().tolist()  # meta: size only
        out = self.bias.view(1, -1, 1, 1).expand(B, -1, H, W)
        if not used:  # every tap masked everywhere (a type-A stem on a 1×1 grid): the bias alone
            return out
        weight = self.weight[:, :, used].permute(2, 0, 1).flatten(0, 1)[:, :, None, None]  # (u·Cout, Cin, 1, 1)
        outputs = F.pad(F.conv2d(x, weight), (pad, pad, pad, pad)).unflatten(1, (len(used), -1))  # (B, u, Cout, ..)
        masks = mask.view(self.taps, 1, 1, H, W)
        for j, tap in enumerate(used):
            r, c = divmod(tap, k)
            out = out + masks[tap] * outputs[:, j, :, r * d:r * d + H, c * d:c * d + W]
        return out

    def step(self, x: torch.Tensor, reads: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The output at one position of each grid only: x (n, H·W, Cin) the flat input maps,
        channels last so that a position's features are contiguous (final at every position
        the masks allow), ``reads`` long (n, k²) the positions the taps of grid i's location
        read (``tap_reads``), ``mask`` (n, k²) that location's mask column -> (n, Cout)."""
        self._check_mask(mask, (len(x), self.taps))
        rows = torch.arange(len(x), device=x.device)[:, None]
        patch = x[rows, reads] * mask[:, :, None]  # (n, k², Cin)
        return torch.addmm(self.bias, patch.transpose(1, 2).flatten(1), self.weight.flatten(1).T)  # (n, Cout)

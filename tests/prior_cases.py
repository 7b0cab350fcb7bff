"""Tiny prior configurations shared by the test suites: every registered prior with every
registered head, at every channel count C in (1, 3) that the pair accepts (``Prior.head_refusal``)."""

from __future__ import annotations

import itertools

import torch
from torch.utils.data import TensorDataset

import latentar
from latentar.registry import HEADS, PRIORS

# arch variants that the shared suites check beside a prior's "tiny" preset, by id: the transformer's
# attention patterns, sized so that they differ from full attention on the suites' 2×2 to 4×5 grids,
# and Image GPT's block and head
VARIANTS: dict[str, dict[str, dict]] = {
    "transformer": {
        "local_1d": dict(attention="local_1d", block=2),
        "local_2d": dict(attention="local_2d", block=[2, 1]),  # block-raster: column pairs
        "strided": dict(attention="strided", stride=2),
        "fixed": dict(attention="fixed", stride=3, summary=1),
        "igpt": dict(norm="rms", activation="gelu2", zero_head=True),  # Image GPT's block and head
    },
}


def variant_arch(name: str, variant: str) -> dict:
    """The arch overrides of a variant ("" for the plain tiny preset)."""
    return VARIANTS[name][variant] if variant else {}


def head_cases(name: str) -> list[tuple[str, int]]:
    """(head, C) pairs a prior accepts in pixel mode, over the head registry."""
    cls = PRIORS.get(name)
    return [(head, C) for head in HEADS.names() for C in (1, 3) if cls.head_refusal(head, C, "pixels") is None]


def all_cases() -> list[tuple[str, str, int, str]]:
    """(prior, head, C, variant): every head case of every prior, then each variant with the
    categorical head (a variant changes the backbone only)."""
    plain = [(name, head, C, "") for name in latentar.list_priors() for head, C in head_cases(name)]
    return plain + [(name, "categorical", C, variant) for name, variants in VARIANTS.items() for variant in variants
                    for C in (1, 3)]


def case_id(case) -> str:
    return "-".join(str(part) for part in case if part != "")


def tiny_prior(name: str, shape, num_symbols: int, head: str = "categorical", seed: int = 0,
               device: torch.device | str = "cpu", **kwargs) -> latentar.Prior:
    """A tiny prior with perturbed weights so that its distribution is far from uniform
    (the same weights on every device: they are drawn on the CPU, then moved)."""
    torch.manual_seed(seed)
    prior = latentar.build_prior(name, shape, num_symbols, head, preset="tiny", **kwargs)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return prior.to(device).eval()


def every_grid(shape, num_symbols: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """All K^(C·H·W) grids of a tiny shape -> long (N, C, H, W)."""
    C, H, W = shape
    grids = torch.tensor(list(itertools.product(range(num_symbols), repeat=C * H * W)), device=device)
    return grids.view(-1, C, H, W)


def generator(device: torch.device | str, seed: int) -> torch.Generator:
    """A seeded generator on ``device`` (samplers draw with a generator of their own device)."""
    return torch.Generator(device=device).manual_seed(seed)


def binary_grids(n: int = 32) -> TensorDataset:
    """n fixed random 1×4×4 binary grids (about 30% ones), each labelled 0: a tiny training set."""
    x = (torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(0)) < 0.3).to(torch.uint8)
    return TensorDataset(x, torch.zeros(n, dtype=torch.long))


def tiny_pixelcnn() -> latentar.Prior:
    """A tiny, seeded pixelcnn over 1×4×4 binary grids (the one `binary_grids` trains)."""
    torch.manual_seed(0)
    return latentar.build_prior("pixelcnn", (1, 4, 4), 2, preset="tiny")

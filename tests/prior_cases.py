"""Tiny prior configurations shared by the test suites: every registered prior with every
registered head, at every channel count C in (1, 3) that the pair accepts (``Prior.head_refusal``),
and the variants of registered priors whose arch changes what they are (``VARIANTS``)."""

from __future__ import annotations

import itertools

import torch
from torch.utils.data import TensorDataset

import latentar
from latentar.registry import HEADS, PRIORS

# case name -> (registered prior, arch settings): configurations the shared suites run beside the defaults
VARIANTS = {
    "transformer_subpixel": ("transformer", dict(tokens="subpixel")),  # channel-masked: a slot per symbol
    "transformer_any_order": ("transformer", dict(order_embedding=True, num_orders=1)),  # takes any order
}


def prior_and_settings(name: str) -> tuple[str, dict]:
    """A case name -> (registered prior, arch settings): a variant's, or the name's with none."""
    return VARIANTS.get(name, (name, {}))


def case_names() -> list[str]:
    """The registered priors and the variants."""
    return latentar.list_priors() + list(VARIANTS)


def head_cases(name: str) -> list[tuple[str, int]]:
    """(head, C) pairs a prior (or a variant) accepts in pixel mode, over the head registry."""
    prior, settings = prior_and_settings(name)
    cls = PRIORS.get(prior)
    arch = cls.make_arch("tiny", **settings) if settings else None
    return [(head, C) for head in HEADS.names() for C in (1, 3)
            if cls.head_refusal(head, C, "pixels", arch) is None]


def all_cases() -> list[tuple[str, str, int]]:
    return [(name, head, C) for name in case_names() for head, C in head_cases(name)]


def case_id(case) -> str:
    return "-".join(str(part) for part in case)


def tiny_prior(name: str, shape, num_symbols: int, head: str = "categorical", seed: int = 0,
               device: torch.device | str = "cpu", **kwargs) -> latentar.Prior:
    """A tiny prior (``name``: registered, or one of ``VARIANTS``) with perturbed weights so that
    its distribution is far from uniform (the same weights on every device: they are drawn on
    the CPU, then moved)."""
    torch.manual_seed(seed)
    name, settings = prior_and_settings(name)
    prior = latentar.build_prior(name, shape, num_symbols, head, preset="tiny", **{**settings, **kwargs})
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

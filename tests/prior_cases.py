"""Tiny prior configurations shared by the test suites: every registered prior with every
registered head, at every channel count C in (1, 3) that the pair accepts (``Prior.head_refusal``),
and the variants of registered priors whose arch changes what they are (``VARIANTS``)."""

from __future__ import annotations

import itertools

import torch
from torch.utils.data import TensorDataset

import latentar
from latentar.registry import HEADS, PRIORS

# case name -> (registered prior, arch settings): configurations the shared suites run beside the defaults.
# The transformer's attention patterns are sized so that they differ from full attention on the suites'
# 2×2 to 4×5 grids; the patterns index slots, so they combine with sub-pixel tokens and any order.
VARIANTS = {
    "transformer_local_1d": ("transformer", dict(attention="local_1d", block=2)),
    "transformer_local_2d": ("transformer", dict(attention="local_2d", block=[2, 1])),  # block-raster: column pairs
    "transformer_strided": ("transformer", dict(attention="strided", stride=2)),
    "transformer_fixed": ("transformer", dict(attention="fixed", stride=3, summary=1)),
    "transformer_igpt": ("transformer", dict(norm="rms", activation="gelu2", zero_head=True)),  # Image GPT's
    "transformer_subpixel": ("transformer", dict(tokens="subpixel")),  # channel-masked: a slot per symbol
    "transformer_any_order": ("transformer", dict(order_embedding=True, num_orders=1)),  # takes any order
    # the combinations: patterns over sub-pixel slots (local_2d on the (H, W·C) slot grid, a block of
    # 3 columns one pixel wide at C = 3), and over the slots of any order
    "transformer_subpixel_local_1d": ("transformer", dict(tokens="subpixel", attention="local_1d", block=2)),
    "transformer_subpixel_local_2d": ("transformer", dict(tokens="subpixel", attention="local_2d", block=[2, 3])),
    "transformer_any_order_strided": ("transformer", dict(order_embedding=True, num_orders=1, attention="strided",
                                                          stride=2)),
}


def prior_and_settings(name: str) -> tuple[str, dict]:
    """A case name -> (registered prior, arch settings): a variant's, or the name's with none."""
    return VARIANTS.get(name, (name, {}))


def prior_class(name: str) -> type[latentar.Prior]:
    """The registered class of a case name (a variant's, that of its prior)."""
    return PRIORS.get(prior_and_settings(name)[0])


def case_names() -> list[str]:
    """The registered priors and the variants."""
    return latentar.list_priors() + list(VARIANTS)


def head_cases(name: str) -> list[tuple[str, int]]:
    """(head, C) pairs a prior (or a variant) accepts in pixel mode, over the head registry."""
    cls, settings = prior_class(name), prior_and_settings(name)[1]
    arch = cls.make_arch("tiny", **settings) if settings else None
    return [(head, C) for head in HEADS.names() for C in (1, 3)
            if cls.head_refusal(head, C, "pixels", arch) is None]


def all_cases() -> list[tuple[str, str, int]]:
    """(case name, head, C): every head case of every registered prior and variant."""
    return [(name, head, C) for name in case_names() for head, C in head_cases(name)]


def case_id(case) -> str:
    return "-".join(str(part) for part in case if part != "")


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

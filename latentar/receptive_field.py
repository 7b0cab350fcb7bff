"""Receptive fields of priors, measured with gradients and drawn as images.

The field of the symbol at ``position`` (its first channel, so that the pixel's own
channels play no part) is the set of positions whose input moves its log-prob: the
log-prob is differentiated with respect to the float input ``prior.input(x)``
(B, C·E, H, W) for 16 random grids, the gradient magnitudes are summed over
grids and input channels, and a position belongs to the field when its sum exceeds
``threshold`` times the largest one. An exact prior's field lies inside the strict
past of the position in the prior's own order (raster, or an any-order prior's first order).

An earlier position outside the field is one of two things. A **blind spot** is a position
the architecture never sees at any depth: a stack of plain mask-B convolutions (``pixelcnn``)
misses a wedge up and to the right, and ``row_lstm``'s triangle misses the same region,
however many layers they stack. A position merely **outside the field** is one this network
is too shallow to reach, while a deeper one of the same architecture would. `architecture_reach`
tells them apart: a prior that declares ``full_context`` (``gated_pixelcnn``, ``pixelcnn_pp``,
``pixelsnail``, ``diagonal_bilstm``, a ``transformer`` whose attention patterns reach every earlier
slot) reaches the whole past; any other is
measured again as a deeper copy of itself (each of ``DEPTH_FIELDS`` raised to at least max(H, W),
enough for 3×3 layers to cross the grid, or to the prior's ``reach_depth`` where that is more: a
small attention window needs about N / block layers; fresh weights).

Colours of a drawn field: the target symbol red, positions in the field light blue, earlier
positions outside the field light grey, blind spots amber, later positions dark grey, and a
later position inside the field (a causality leak, never seen in an exact prior) magenta.
"""

from __future__ import annotations

import math
from dataclasses import fields, replace

import torch
from einops import reduce

from latentar.bench import random_cond
from latentar.images import figure_image
from latentar.memory import check_fits
from latentar.nn.modes import eval_mode
from latentar.priors.base import Prior
from latentar.priors.footprint import training_bytes
from latentar.priors.orders import ranks, raster

COLOURS = {  # RGB in [0, 1]
    "target": (0.90, 0.10, 0.10),
    "field": (0.45, 0.75, 1.00),
    "outside": (0.82, 0.82, 0.82),
    "blind": (0.95, 0.65, 0.10),
    "future": (0.15, 0.15, 0.15),
    "leak": (0.90, 0.10, 0.90),
}
LEGEND = {  # the kinds of position, as the figure's legend names them
    "target": "target symbol",
    "field": "in the field",
    "outside": "earlier, outside the field (a deeper net reaches it)",
    "blind": "blind spot (earlier, unreachable at any depth)",
    "future": "later",
    "leak": "later, yet in the field (a causality leak)",
}
DEPTH_FIELDS = ("num_blocks", "num_layers")  # the Arch fields that stack a network's layers


def centre(shape: tuple[int, int, int]) -> tuple[int, int]:
    """The centre position (h, w) of a (C, H, W) grid."""
    _, H, W = shape
    return H // 2, W // 2


def check_position(position: tuple[int, int], shape: tuple[int, int, int]) -> tuple[int, int]:
    _, H, W = shape
    h, w = (int(p) for p in position)
    if not (0 <= h < H and 0 <= w < W):
        raise ValueError(f"position must lie in the {H}×{W} grid, got {(h, w)}")
    return h, w


def input_gradient(prior: Prior, position: tuple[int, int] | None = None, *, num_grids: int = 16,
                   seed: int = 0, order: int = 0) -> torch.Tensor:
    """Summed |d log p(symbol at position, channel 0) / d input| per position -> float (H, W),
    under the prior's ``order``-th listed order (``prior.orders``; a raster prior has one).

    Uses ``num_grids`` random symbol grids (and random labels / context where the
    prior needs them), so that no single input can hide a dependence.
    """
    C, H, W = prior.spec.shape
    if prior.composite:
        raise ValueError(f"prior {prior.name!r} chains stage priors and has no network of its own; "
                         f"measure the receptive field of one of its stages (prior.stages[i])")
    h, w = check_position(centre(prior.spec.shape) if position is None else position, prior.spec.shape)
    estimate, made_of = training_bytes(prior, num_grids)  # a forward and backward, before allocating
    check_fits(estimate, f"the receptive field from {num_grids} grids {tuple(prior.spec.shape)}", prior.device, made_of)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, prior.spec.num_symbols, (num_grids, C, H, W), generator=gen).to(prior.device)
    cond = random_cond(prior, num_grids, gen)
    with eval_mode(prior), torch.enable_grad():
        cond = prior.check_inputs(x, cond)
        z = prior.input(x).detach().requires_grad_()  # (n, C·E, H, W)
        lp = prior.head.log_prob(prior.ordered_network(z, cond, prior.order_at(order)), x)  # (n, C, H, W)
        (grad,) = torch.autograd.grad(lp[:, 0, h, w].sum(), z)  # grids do not mix: one backward
    return reduce(grad.abs(), "n ce h w -> h w", "sum").cpu()


def receptive_field(prior: Prior, position: tuple[int, int] | None = None,
                    threshold: float = 0.0, order: int = 0) -> torch.Tensor:
    """Positions whose gradient exceeds ``threshold`` × the largest one -> bool (H, W), under the
    prior's ``order``-th listed order.

    ``position`` defaults to the centre (H // 2, W // 2); ``threshold`` in [0, 1):
    0 keeps every position with a nonzero gradient.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold is a fraction of the largest gradient in [0, 1), got {threshold}")
    grad = input_gradient(prior, position, order=order)  # (H, W)
    if grad.max() == 0:
        return torch.zeros_like(grad, dtype=torch.bool)
    return grad > threshold * grad.max()


def raster_past(shape: tuple[int, int, int], position: tuple[int, int]) -> torch.Tensor:
    """Positions strictly before ``position`` in raster order -> bool (H, W)."""
    _, H, W = shape
    return order_past(raster(H, W), (H, W), position)


def order_past(order: torch.Tensor, size: tuple[int, int], position: tuple[int, int]) -> torch.Tensor:
    """Positions strictly before ``position`` in ``order`` (H·W,) of a grid of ``size`` (H, W) -> bool (H, W)."""
    H, W = size
    rank = ranks(order.cpu()).view(H, W)
    return rank < rank[position]


def prior_past(prior: Prior, position: tuple[int, int], order: int = 0) -> torch.Tensor:
    """Positions strictly before ``position`` in the prior's ``order``-th listed order (raster for a
    raster prior) -> bool (H, W)."""
    _, H, W = prior.spec.shape
    return order_past(prior.order_at(order), (H, W), position)


def architecture_reach(prior: Prior, position: tuple[int, int], order: int = 0) -> torch.Tensor:
    """The earlier positions that ``prior``'s architecture sees at some depth -> bool (H, W): the
    whole past (``prior_past``) for a ``full_context`` prior, else the field of a deeper copy of it
    (each of ``DEPTH_FIELDS`` at least max(H, W) and ``prior.reach_depth()``, fresh weights from
    seed 0) within the past."""
    _, H, W = prior.spec.shape
    past = prior_past(prior, position, order)
    if prior.full_context:
        return past
    least = max(H, W, prior.reach_depth())
    depths = {f.name: max(getattr(prior.arch, f.name), least) for f in fields(prior.arch) if f.name in DEPTH_FIELDS}
    if not depths:
        raise ValueError(f"prior {prior.name!r} neither declares full_context nor has a depth field "
                         f"({', '.join(DEPTH_FIELDS)}): its blind spot cannot be told from a short field")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        deeper = type(prior)(prior.spec, replace(prior.arch, **depths)).to(prior.device)
    if deeper.full_context:  # a prior that knows its field from its depth (the transformer's patterns)
        return past
    return receptive_field(deeper, position, order=order) & past


def position_kinds(field: torch.Tensor, reach: torch.Tensor, position: tuple[int, int],
                   past: torch.Tensor | None = None) -> torch.Tensor:
    """The kind of every position (its index in ``COLOURS``) -> long (H, W), from the field and the
    architecture's reach, both bool (H, W), and the positions before ``position`` (None: raster)."""
    H, W = field.shape
    past = raster_past((1, H, W), position) if past is None else past
    kinds = list(COLOURS)
    kind = torch.full((H, W), kinds.index("future"))
    kind[past & field] = kinds.index("field")
    kind[past & ~field & reach] = kinds.index("outside")
    kind[past & ~field & ~reach] = kinds.index("blind")
    kind[~past & field] = kinds.index("leak")
    kind[position] = kinds.index("leak" if field[position] else "target")
    return kind


def field_summary(field: torch.Tensor, reach: torch.Tensor, position: tuple[int, int],
                  past: torch.Tensor | None = None) -> dict:
    """Counts of a field: its size, the earlier positions (``past``; None: raster), those outside
    the field that a deeper net reaches, the blind spot (unreachable at any depth) and the later
    ones reached (leaks)."""
    past = raster_past((1, *field.shape), position) if past is None else past
    return {"position": list(position), "field": int(field.sum()), "past": int(past.sum()),
            "outside": int((past & ~field & reach).sum()), "blind": int((past & ~field & ~reach).sum()),
            "leaks": int((~past & field).sum())}


def field_figure(priors: dict[str, Prior], position: tuple[int, int] | None = None,
                 threshold: float = 0.0, scale: int = 12, order: int = 0) -> tuple[torch.Tensor, dict]:
    """The fields of priors of one shape side by side, with a legend of the kinds of position
    -> (uint8 RGB image (3, h, w), {name: `field_summary`}). ``scale``: pixels per grid cell;
    ``order``: which of each prior's listed orders (raster priors have only 0)."""
    from matplotlib.figure import Figure  # matplotlib is slow to import; only figures need it
    from matplotlib.patches import Patch

    shapes = {tuple(prior.spec.shape[1:]) for prior in priors.values()}
    if len(shapes) != 1:
        raise ValueError(f"a side-by-side figure needs priors of one grid size, got {sorted(shapes)}")
    kinds, summaries = {}, {}
    for name, prior in priors.items():
        pos = check_position(centre(prior.spec.shape) if position is None else position, prior.spec.shape)
        field, reach, past = (receptive_field(prior, pos, threshold, order), architecture_reach(prior, pos, order),
                              prior_past(prior, pos, order))
        kinds[name], summaries[name] = position_kinds(field, reach, pos, past), field_summary(field, reach, pos, past)
    names = list(COLOURS)
    shown = sorted(set().union(*(kind.unique().tolist() for kind in kinds.values())))
    handles = [Patch(facecolor=COLOURS[names[k]], edgecolor="black", linewidth=0.5, label=LEGEND[names[k]])
               for k in shown]
    (H, W), dpi = shapes.pop(), 100
    panel = max(W * scale / dpi, 1.8)  # inches per panel: room for its title
    columns = 2 if panel * len(priors) >= 8 else 1  # of the legend: one label is about 3.5 inches wide
    size = (max(panel * len(priors) + 0.2, 4.2), panel * H / W + 0.5 + 0.2 * math.ceil(len(handles) / columns))
    figure = Figure(figsize=size, dpi=dpi, layout="constrained")
    for ax, (name, kind) in zip(figure.subplots(1, len(priors), squeeze=False)[0], kinds.items()):
        ax.imshow(torch.tensor(list(COLOURS.values()))[kind].numpy(), interpolation="nearest")
        ax.set_xticks([i - 0.5 for i in range(W + 1)], minor=True)
        ax.set_yticks([i - 0.5 for i in range(H + 1)], minor=True)
        ax.grid(which="minor", color="white", linewidth=0.5)
        ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
        ax.set_title(name if order == 0 else f"{name}, order {order}", fontsize=9)
    figure.legend(handles=handles, loc="outside lower center", ncols=columns, fontsize=8, frameon=False)
    return figure_image(figure), summaries


__all__ = ["receptive_field", "input_gradient", "architecture_reach", "position_kinds", "field_figure",
           "field_summary", "raster_past", "order_past", "prior_past"]

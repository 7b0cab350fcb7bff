"""Receptive fields of priors, measured with gradients and drawn as images.

The field of the symbol at ``position`` (its first channel, so that the pixel's own
channels play no part) is the set of positions whose input moves its log-prob: the
log-prob is differentiated with respect to the float input ``prior.input(x)``
(B, C·E, H, W) for 16 random grids, the gradient magnitudes are summed over
grids and input channels, and a position belongs to the field when its sum exceeds
``threshold`` times the largest one. An exact prior's field lies inside the strict
raster past of the position; a stack of plain mask-B convolutions (``pixelcnn``)
leaves a blind spot up and to the right, which ``gated_pixelcnn`` and ``pixelsnail``
do not; ``row_lstm``'s field is a triangle that misses the same region.

Colours of a drawn field: the target symbol red, positions in the field light blue,
earlier positions outside it (a blind spot) amber, later positions dark grey, and a
later position inside the field (a causality leak, never seen in an exact prior)
magenta.
"""

from __future__ import annotations

import torch
from einops import reduce, repeat
from PIL import Image, ImageDraw
from torchvision.transforms.functional import pil_to_tensor
from torchvision.utils import make_grid

from latentar.bench import random_cond
from latentar.memory import check_fits
from latentar.nn.modes import eval_mode
from latentar.priors.base import Prior
from latentar.priors.footprint import training_bytes

COLOURS = {  # RGB in [0, 1]
    "target": (0.90, 0.10, 0.10),
    "field": (0.45, 0.75, 1.00),
    "blind": (0.95, 0.65, 0.10),
    "future": (0.15, 0.15, 0.15),
    "leak": (0.90, 0.10, 0.90),
}


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
                   seed: int = 0) -> torch.Tensor:
    """Summed |d log p(symbol at position, channel 0) / d input| per position -> float (H, W).

    Uses ``num_grids`` random symbol grids (and random labels / context where the
    prior needs them), so that no single input can hide a dependence.
    """
    C, H, W = prior.spec.shape
    h, w = check_position(centre(prior.spec.shape) if position is None else position, prior.spec.shape)
    estimate, made_of = training_bytes(prior, num_grids)  # a forward and backward, before allocating
    check_fits(estimate, f"the receptive field from {num_grids} grids {tuple(prior.spec.shape)}", prior.device, made_of)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, prior.spec.num_symbols, (num_grids, C, H, W), generator=gen).to(prior.device)
    cond = random_cond(prior, num_grids, gen)
    with eval_mode(prior), torch.enable_grad():
        cond = prior.check_inputs(x, cond)
        z = prior.input(x).detach().requires_grad_()  # (n, C·E, H, W)
        lp = prior.head.log_prob(prior.network(z, cond), x)  # (n, C, H, W)
        (grad,) = torch.autograd.grad(lp[:, 0, h, w].sum(), z)  # grids do not mix: one backward
    return reduce(grad.abs(), "n ce h w -> h w", "sum").cpu()


def receptive_field(prior: Prior, position: tuple[int, int] | None = None,
                    threshold: float = 0.0) -> torch.Tensor:
    """Positions whose gradient exceeds ``threshold`` × the largest one -> bool (H, W).

    ``position`` defaults to the centre (H // 2, W // 2); ``threshold`` in [0, 1):
    0 keeps every position with a nonzero gradient.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold is a fraction of the largest gradient in [0, 1), got {threshold}")
    grad = input_gradient(prior, position)  # (H, W)
    if grad.max() == 0:
        return torch.zeros_like(grad, dtype=torch.bool)
    return grad > threshold * grad.max()


def raster_past(shape: tuple[int, int, int], position: tuple[int, int]) -> torch.Tensor:
    """Positions strictly before ``position`` in raster order -> bool (H, W)."""
    _, H, W = shape
    h, w = position
    return torch.arange(H * W).view(H, W) < h * W + w


def draw_field(field: torch.Tensor, position: tuple[int, int], scale: int = 12) -> torch.Tensor:
    """A field bool (H, W) -> RGB image float (3, H·scale, W·scale) in the module's colours."""
    H, W = field.shape
    past = raster_past((1, H, W), position)
    kinds = list(COLOURS)  # a position's kind is its row in the palette
    kind = torch.full((H, W), kinds.index("future"))
    kind[past & field] = kinds.index("field")
    kind[past & ~field] = kinds.index("blind")
    kind[~past & field] = kinds.index("leak")
    kind[position] = kinds.index("leak" if field[position] else "target")
    image = torch.tensor(list(COLOURS.values()))[kind]  # (H, W, 3)
    return repeat(image, "h w c -> c (h s) (w t)", s=scale, t=scale)


def caption(image: torch.Tensor, text: str, height: int = 14) -> torch.Tensor:
    """Put ``text`` in a white strip above an image float (3, h, w) -> (3, h + height, w)."""
    strip = Image.new("RGB", (image.shape[2], height), "white")
    ImageDraw.Draw(strip).text((2, 1), text, fill="black")
    return torch.cat([pil_to_tensor(strip).float() / 255, image], dim=1)


def field_summary(field: torch.Tensor, position: tuple[int, int]) -> dict:
    """Counts of a field: size, earlier positions missed (blind spot) and later ones reached."""
    past = raster_past((1, *field.shape), position)
    return {"position": list(position), "field": int(field.sum()), "past": int(past.sum()),
            "blind": int((past & ~field).sum()), "leaks": int((~past & field).sum())}


def field_figure(priors: dict[str, Prior], position: tuple[int, int] | None = None,
                 threshold: float = 0.0, scale: int = 12) -> tuple[torch.Tensor, dict]:
    """Side-by-side captioned fields of priors of one shape -> (image (3, h, w), summaries)."""
    panels, summaries = [], {}
    for name, prior in priors.items():
        pos = check_position(centre(prior.spec.shape) if position is None else position, prior.spec.shape)
        field = receptive_field(prior, pos, threshold)
        panels.append(caption(draw_field(field, pos, scale), name))
        summaries[name] = field_summary(field, pos)
    sizes = {tuple(p.shape) for p in panels}
    if len(sizes) != 1:
        raise ValueError(f"a side-by-side figure needs priors of one shape, got panel sizes {sorted(sizes)}")
    return make_grid(panels, nrow=len(panels), padding=4, pad_value=1.0), summaries


__all__ = ["receptive_field", "input_gradient", "draw_field", "field_figure", "field_summary",
           "raster_past"]

"""Known regions and mixtures of orders: what ``Prior.log_prob(known=...)`` and
``Prior.complete`` share.

A known mask is a bool tensor (H, W), or (B, H, W) for one mask per grid, True where the
symbol is given. Grids that share a mask are handled together (``mask_groups``). For each
order i of a prior, ``region_orders`` gives the order that generates the known positions
first: a prior that takes any order reorders (``orders.known_first``, each part keeping its
relative order); a raster prior cannot, so its known positions must already be a raster
prefix (the top rows and a left part of the next row), a prior with one order of its own a prefix
of that order. The known positions are then a prefix
of every order used, so log p_i(x_K) and log p_i(x_U | x_K) are the sums of the per-symbol
log-probs over the known and the unknown positions, and under the uniform mixture of the
n orders

    log p(x_U | x_K) = logsumexp_i [log p_i(x_K) + log p_i(x_U | x_K)] - logsumexp_i log p_i(x_K)

(``mixture_log_prob``); with nothing known this is logsumexp_i log p_i(x) - log n.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

import torch
import torch.nn.functional as F

from latentar.priors.condition import Condition
from latentar.priors.engine import any_order_priors
from latentar.priors.orders import known_first, known_prefix, raster

if TYPE_CHECKING:  # a prior's methods call these
    from latentar.priors.base import Prior


def known_masks(known: Any, batch: int, H: int, W: int) -> torch.Tensor:
    """A known mask, bool (H, W) or (batch, H, W) -> bool (batch, H, W) on the CPU; else a
    ValueError naming the problem."""
    if not isinstance(known, torch.Tensor) or known.dtype != torch.bool:
        got = f"a {known.dtype} tensor" if isinstance(known, torch.Tensor) else f"a {type(known).__name__}"
        raise ValueError(f"known must be a bool tensor ({H}, {W}) or ({batch}, {H}, {W}), True where the "
                         f"symbol is given; got {got}")
    if tuple(known.shape) not in ((H, W), (batch, H, W)):
        raise ValueError(f"known must have shape ({H}, {W}) or ({batch}, {H}, {W}), got {tuple(known.shape)}")
    return known.cpu().expand(batch, H, W)


def mask_groups(masks: torch.Tensor) -> Iterator[tuple[torch.Tensor, slice | torch.Tensor]]:
    """The grids of masks bool (B, H, W) that share a mask -> (mask (H, W), index of those
    grids): one group, indexed by ``slice(None)``, when every grid has the same mask."""
    if bool((masks == masks[:1]).all()):
        yield masks[0], slice(None)
        return
    distinct, which = torch.unique(masks.flatten(1), dim=0, return_inverse=True)
    for i, mask in enumerate(distinct):
        yield mask.view(masks.shape[1:]), (which == i).nonzero().squeeze(1)


def region_orders(prior: Prior, mask: torch.Tensor, orders: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``orders`` long (n, H·W) of ``prior`` with the known positions of ``mask`` bool (H, W)
    first -> (long (n, H·W) on the CPU, the number of known positions); a prior that cannot reorder
    refuses a mask that is not a prefix of its order (raster, for most), naming the priors that can."""
    orders = orders.cpu()
    if prior.any_order:
        return torch.stack([known_first(order, mask) for order in orders]), int(mask.sum())
    start = known_prefix(orders[0], mask)
    if start is None and torch.equal(orders[0], raster(*mask.shape)):
        raise ValueError(f"prior {prior.name!r} generates in raster order only, so the known positions must be "
                         f"the top rows and a left part of the next row (a raster prefix); the priors that take "
                         f"any known region are {any_order_priors()}")
    if start is None:
        raise ValueError(f"prior {prior.name!r} generates in its own order only (prior.orders[0]), so the known "
                         f"positions must be a prefix of that order; the priors that take any known region are "
                         f"{any_order_priors()}")
    return orders, start


def split_log_probs(per_symbol: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-symbol log-probs (B, C, H, W) -> their sums over the known positions of mask bool
    (H, W) and over the unknown ones, (B,) each."""
    known = mask.to(per_symbol.device)[None, None]  # (1, 1, H, W)
    zero = per_symbol.new_zeros(())
    return (torch.where(known, per_symbol, zero).flatten(1).sum(1),
            torch.where(known, zero, per_symbol).flatten(1).sum(1))


def mixture_log_prob(known: torch.Tensor, unknown: torch.Tensor) -> torch.Tensor:
    """log p(x_U | x_K) under the uniform mixture of n orders, from log p_i(x_K) and
    log p_i(x_U | x_K), (n, B) each -> (B,). With one order it is ``unknown[0]`` exactly."""
    return torch.logsumexp(F.log_softmax(known, dim=0) + unknown, dim=0)


def region_log_prob(prior: Prior, x: torch.Tensor, cond: Condition, masks: torch.Tensor,
                    listed: torch.Tensor) -> torch.Tensor:
    """log p(x_U | x_K) in nats of x long (B, C, H, W) (checked, with its ``cond``) for the known
    masks bool (B, H, W), under the uniform mixture of the orders ``listed`` long (n, H·W) made
    known-first -> (B,); with nothing known, log p(x)."""
    parts = []
    for mask, index in mask_groups(masks):
        orders, _ = region_orders(prior, mask, listed)
        grids, grid_cond = x[index], cond.map(lambda t: t[index])
        sums = [split_log_probs(prior.log_prob_per_symbol(grids, grid_cond, order=order.to(prior.device)), mask)
                for order in orders]
        parts.append((index, mixture_log_prob(*(torch.stack(part) for part in zip(*sums)))))
    if len(parts) == 1:
        return parts[0][1]
    result = torch.empty(len(x), dtype=parts[0][1].dtype, device=parts[0][1].device)
    for index, value in parts:
        result[index] = value
    return result


@torch.no_grad()
def posterior_orders(prior: Prior, x: torch.Tensor, cond: Condition, orders: torch.Tensor, mask: torch.Tensor,
                     batch: int, generator: torch.Generator | None) -> torch.Tensor:
    """For each grid of x long (B, C, H, W), an index into ``orders`` long (n, H·W), each with the
    known positions of ``mask`` (H, W) first, drawn with probability ∝ p_i(x_known), the exact
    posterior of the mixture; scored ``batch`` grids at a time -> long (B,)."""
    known = torch.cat([torch.stack([split_log_probs(prior.log_prob_per_symbol(
        part, cond.map(lambda t: t[first:first + batch]), order=order), mask)[0] for order in orders])
        for first, part in zip(range(0, len(x), batch), x.split(batch))], dim=1)  # (n, B)
    return torch.multinomial(F.softmax(known.T, dim=-1), 1, generator=generator).squeeze(-1)

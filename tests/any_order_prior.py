"""A tiny prior that generates in any order, for the tests of orders, known regions and the
mixture of orders: a MADE-style network (Germain et al. 2015) whose masks come from the ranks
of the order. Not registered: the tests build it directly (``any_order_prior``).

Its network: h_q = tanh(Σ_{p before q} W1[q, p] · z_p + b1[q]), params_q = W2 · h_q + b2[q],
so the params at position q read exactly the positions before q in the order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from latentar.checks import build
from latentar.priors.base import Prior
from latentar.priors.condition import Condition
from latentar.priors.orders import named_orders, ranks
from latentar.priors.spec import PriorSpec


@dataclass
class MadeArch:
    hidden: int = 6  # features per position
    orders: str = "s_curve"  # the named orders of latentar.priors.orders
    num_orders: int = 2  # how many of their symmetric variants the mixture holds


class AnyOrderMade(Prior):
    name = "any_order_made"
    Arch = MadeArch
    any_order = True

    def __init__(self, spec: PriorSpec, arch: MadeArch):
        super().__init__(spec, arch)
        C, H, W = spec.shape
        positions, features = H * W, C * self.input.dim
        self.first = nn.Parameter(torch.randn(positions, positions, features, arch.hidden) / features ** 0.5)
        self.first_bias = nn.Parameter(torch.zeros(positions, arch.hidden))
        self.out = nn.Linear(arch.hidden, self.head.num_params)
        self.out_bias = nn.Parameter(torch.zeros(positions, self.head.num_params))
        orders = named_orders(arch.orders, arch.num_orders, H, W)  # on the CPU, also under a meta device
        self.register_buffer("order_table", orders.to(self.first.device))

    @classmethod
    def from_config(cls, config: dict) -> AnyOrderMade:  # not in the registry
        return cls(build(PriorSpec, config["spec"], "prior"), build(MadeArch, config["arch"], cls.name))

    @property
    def orders(self) -> torch.Tensor:
        return self.order_table

    def network(self, z: torch.Tensor, cond: Condition, order: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, C·E, H, W) -> params (B, P, H, W), causal in ``order`` (None: the first listed)."""
        B, _, H, W = z.shape
        rank = ranks(self.orders[0] if order is None else order)  # (H·W,)
        before = (rank[None, :] < rank[:, None]).float()  # (q, p): p comes before q
        flat = z.flatten(2).transpose(1, 2)  # (B, H·W, C·E)
        hidden = torch.tanh(torch.einsum("bpd,qpdk,qp->bqk", flat, self.first, before) + self.first_bias)
        params = self.out(hidden) + self.out_bias  # (B, H·W, P)
        return params.transpose(1, 2).reshape(B, -1, H, W)


def any_order_prior(shape, num_symbols: int, *, head: str = "categorical", num_orders: int = 2,
                    seed: int = 0, **spec) -> AnyOrderMade:
    """A seeded ``AnyOrderMade`` with perturbed weights (far from uniform), in eval mode."""
    torch.manual_seed(seed)
    prior = AnyOrderMade(PriorSpec(shape=shape, num_symbols=num_symbols, head=head, **spec),
                         MadeArch(num_orders=num_orders))
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return prior.eval()

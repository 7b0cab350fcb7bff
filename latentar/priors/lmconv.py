"""Locally Masked Convolution prior (Jain, Abbeel, Pathak 2020, "Locally Masked Convolution for
Autoregressive Models"): one network that generates the H·W positions in any order.

Every spatial layer is a locally masked conv (``latentar.nn.locally_masked``): location p's
k×k filter reads only positions that come before p in the order (type A, the stem) or before
or at p (type B, every later layer), so a location's features never depend on its own symbol
or later ones, whatever the order. The network is a PixelCNN++-style single stream, laid out
like the paper's: a type-A stem, then an up pass of three groups of gated residual blocks
(``latentar.nn.shifted.GatedResBlock``, concat_elu) with a dilation-2 LMConv between groups
in place of PixelCNN++'s strided downsampling, each output stored; then a down pass of three
groups (one more block in the second and third) that takes the stored outputs back as
short-cut inputs, with a dilation-2 LMConv between groups in place of upsampling; a 1×1 layer
to the head's params. Whole pixels are the unit of conditioning: the head couples a pixel's
channels. Class conditioning adds a learned per-class bias inside every gated block.

The prior lists its orders (``prior.orders``, (n, H·W): ``arch.num_orders`` symmetric variants
of the raster or S-curve scan) and is their uniform mixture; training draws one of them for
each batch, as the paper does. The paper's results: CIFAR-10
2.887 bits/dim with 8 S-curve orders (2.909 with one), binarized MNIST 77.56 nats with 8 orders.
S-curve orders reach every earlier position at enough depth; raster orders keep PixelCNN's
blind spot (their masks are PixelCNN's mask A and B).

Fast sampling (``LMConvStepper``) evaluates every layer at the new position only, with that
position's mask column, from a cache of each layer's input map: a position's features are
final once computed, since they never depend on its own symbol or later ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Sequence, cast

import torch
import torch.nn.functional as F
from torch import nn

from latentar.checks import DEPTH, FRACTION, Bound, Checked
from latentar.nn.conditioning import class_biases
from latentar.nn.locally_masked import LocallyMaskedConv2d, lmconv_mask, tap_reads
from latentar.nn.shifted import GatedResBlock, Nin
from latentar.priors.base import Prior, register_prior
from latentar.priors.condition import Condition
from latentar.priors.engine import Stepper, grid_rows
from latentar.priors.orders import ORDER_NAMES, named_orders
from latentar.priors.spec import PriorSpec

GROUPS = 3  # groups of gated blocks in each pass, as in the paper's network
MASK_KINDS = (("A", 1), ("B", 1), ("B", 2))  # (kind, dilation) of the stem, the blocks, the links between groups


@dataclass
class LMConvArch(Checked):
    label = "lmconv"
    bounds = {"dropout": FRACTION, "num_blocks": DEPTH, "kernel": Bound(1, 15), "orders": ORDER_NAMES,
              "num_orders": Bound(1, 8)}

    hidden: int = 64  # F: features of every layer (paper: 160)
    num_blocks: int = 3  # R: gated blocks per group (up pass: R, R, R; down pass: R, R+1, R+1) (paper: 5)
    dropout: float = 0.0  # inside every gated block (paper: 0)
    kernel: int = 3  # k of every locally masked conv, odd (paper: 3)
    orders: str = "s_curve"  # the scan whose symmetric variants are the orders: "s_curve" or "raster"
    num_orders: int = 8  # n: how many of its variants (8 on a square grid, 4 otherwise) form the mixture


class Groups(nn.Module):
    """The gated blocks of both passes and the dilation-2 LMConvs that link their groups."""

    up: Sequence[Sequence[GatedResBlock]]  # nn.ModuleLists: per group, its blocks
    down: Sequence[Sequence[GatedResBlock]]
    up_links: Sequence[LocallyMaskedConv2d]  # nn.ModuleLists: one between consecutive groups
    down_links: Sequence[LocallyMaskedConv2d]

    def __init__(self, arch: LMConvArch):
        super().__init__()
        F_, R = arch.hidden, arch.num_blocks
        block = partial(GatedResBlock, F_, partial(LocallyMaskedConv2d, kernel=arch.kernel), dropout=arch.dropout)
        link = partial(LocallyMaskedConv2d, F_, F_, arch.kernel, 2)
        self.up = cast(Sequence[Sequence[GatedResBlock]],
                       nn.ModuleList(nn.ModuleList(block() for _ in range(R)) for _ in range(GROUPS)))
        # the down pass consumes the stored outputs: its later groups take the links' outputs too
        self.down = cast(Sequence[Sequence[GatedResBlock]],
                         nn.ModuleList(nn.ModuleList(block(F_) for _ in range(R + (g > 0))) for g in range(GROUPS)))
        self.up_links = cast(Sequence[LocallyMaskedConv2d], nn.ModuleList(link() for _ in range(GROUPS - 1)))
        self.down_links = cast(Sequence[LocallyMaskedConv2d], nn.ModuleList(link() for _ in range(GROUPS - 1)))


class WholeMaps:
    """A pass of the network over whole maps, every conv masked for one order."""

    def __init__(self, masks: dict[tuple[str, int], torch.Tensor]):
        self.masks = masks  # (kind, dilation) -> (k², H·W)

    def conv(self, conv: LocallyMaskedConv2d, x: torch.Tensor, level: int = 0) -> torch.Tensor:
        return conv(x, self.masks[conv.kind, conv.dilation])

    conv_input = conv


class AtPosition:
    """A pass of the network at one position of each grid only, grid i at the flat position
    p[i]: a conv stores its input there in its cache map (n, H·W, Cin), then reads that
    position's neighbours (those before it in grid i's order are final); inputs and outputs are
    (n, channels, 1, 1)."""

    def __init__(self, caches: dict[nn.Module, torch.Tensor], p: torch.Tensor, reads: dict[int, torch.Tensor],
                 columns: dict[tuple[str, int], torch.Tensor], size: int):
        self.caches, self.p, self.size = caches, p, size  # p long (n,); size H·W
        self.reads, self.columns = reads, columns  # dilation -> long (n, k²); (kind, dilation) -> (n, k²)
        self.rows = torch.arange(len(p), device=p.device)

    def conv(self, conv: LocallyMaskedConv2d, x: torch.Tensor, level: int = 0) -> torch.Tensor:
        if conv not in self.caches:
            self.caches[conv] = x.new_zeros(x.shape[0], self.size, x.shape[1])  # (n, H·W, Cin)
        cache = self.caches[conv]
        cache[self.rows, self.p] = x[:, :, 0, 0]
        return self.conv_input(conv, cache)

    def conv_input(self, conv: LocallyMaskedConv2d, z: torch.Tensor) -> torch.Tensor:
        """The conv at each grid's position of flat maps z (n, H·W, Cin), final before it
        -> (n, Cout, 1, 1)."""
        return conv.step(z, self.reads[conv.dilation], self.columns[conv.kind, conv.dilation])[:, :, None, None]


class LMConvStepper(Stepper):
    """The fast stepper: every layer at the new position of each grid only (``AtPosition``),
    its inputs cached per layer as flat maps (n, H·W, C_l); ``take`` enters the drawn symbols
    into the flat network input z. Exact: features at p never depend on x_p or later positions.
    The grids may each have their own order (the mixture's draws walk in one batch)."""

    prior: LMConv

    def __init__(self, prior: LMConv, x: torch.Tensor, cond: Condition, order: torch.Tensor | None):
        super().__init__(prior, x, cond, order)
        n, _, H, W = x.shape
        orders = (prior.own_order() if order is None else order).expand(n, -1)  # (n, H·W)
        distinct, self.which = torch.unique(orders, dim=0, return_inverse=True)  # (u, H·W), (n,)
        per_order = [prior.masks(row, x.device) for row in distinct]
        self.masks = {key: torch.stack([masks[key] for masks in per_order]) for key in per_order[0]}  # (u, k², H·W)
        self.z = prior.network_input(prior.input(x)).flatten(2).transpose(1, 2).contiguous()  # (n, H·W, C·E + 1)
        self.caches: dict[nn.Module, torch.Tensor] = {}
        self.rows = torch.arange(n, device=x.device)

    def params(self, h: int | torch.Tensor, w: int | torch.Tensor, c: int | None) -> torch.Tensor:
        _, _, H, W = self.x.shape
        p = torch.as_tensor(h * W + w, device=self.x.device).expand(len(self.x))  # (n,)
        kernel = self.prior.arch.kernel
        reads = {d: tap_reads(p, H, W, kernel, d) for d in {d for _, d in self.masks}}
        columns = {key: masks[self.which, :, p] for key, masks in self.masks.items()}
        run = AtPosition(self.caches, p, reads, columns, H * W)
        return self.prior.layers(run, self.z, self.cond)[:, :, 0, 0]  # (n, P)

    def take(self, h: int | torch.Tensor, w: int | torch.Tensor) -> None:
        W = self.x.shape[-1]
        pixel = self.x[grid_rows(h, len(self.x)), :, h, w]  # (n, C)
        embedded = self.prior.input(pixel[:, :, None, None])[:, :, 0, 0]  # (n, C·E)
        self.z[self.rows, h * W + w, :embedded.shape[1]] = embedded


@register_prior("lmconv")
class LMConv(Prior):
    Arch = LMConvArch
    presets = {
        "tiny": dict(hidden=4, num_blocks=1, num_orders=1),
        "small": dict(hidden=32, num_blocks=2),
        "default": {},
        # CIFAR-10: 160 features, 5 blocks per group, k = 3, no dropout, 8 S-curve orders,
        # a mixture of 10 logistics (the head's default); 2.887 bits/dim
        "paper": dict(hidden=160, num_blocks=5, dropout=0.0, kernel=3, orders="s_curve", num_orders=8),
    }
    any_order = True
    channel_masked = False
    Stepper = LMConvStepper
    full_context = True  # S-curve orders reach every earlier position (raster orders keep PixelCNN's blind spot)
    checkpointable = True  # every gated block goes through ``checkpointed``

    order_table: torch.Tensor  # (n, H·W) long, a buffer: ``orders``

    def __init__(self, spec: PriorSpec, arch: LMConvArch):
        super().__init__(spec, arch)
        C, H, W = spec.shape
        F_ = arch.hidden
        with torch.device("cpu"):  # also when the model is built on the meta device (``saving.meta_model``)
            orders = named_orders(arch.orders, arch.num_orders, H, W)  # (n, H·W)
        self.register_buffer("order_table", orders, persistent=False)
        # + a channel of ones: tells an earlier position's input from nothing
        self.stem = LocallyMaskedConv2d(C * self.input.dim + 1, F_, arch.kernel, 1, "A")
        self.groups = Groups(arch)
        self.gated = [block for group in (*self.groups.up, *self.groups.down) for block in group]
        self.class_bias = class_biases(spec.label_rows, [2 * F_] * len(self.gated), spec.augment_sizes)
        self.out = Nin(F_, self.head.num_params)

    @property
    def orders(self) -> torch.Tensor:
        """The listed orders (n, H·W): ``arch.num_orders`` symmetric variants of ``arch.orders``."""
        return self.order_table

    def own_order(self) -> torch.Tensor:
        """The order of a pass given none -> (H·W,): in training, a listed order drawn uniformly
        for the batch (the paper's training of an ensemble: each order of the mixture learns);
        in evaluation, the first listed order."""
        if self.training and len(self.orders) > 1:
            return self.orders[int(torch.randint(len(self.orders), ()))]
        return self.orders[0]

    def masks(self, order: torch.Tensor | None, device: torch.device) -> dict[tuple[str, int], torch.Tensor]:
        """The masks (k², H·W) on ``device`` of every (kind, dilation) of this network under
        ``order`` (H·W,) (None: ``own_order``)."""
        _, H, W = self.spec.shape
        order = self.own_order() if order is None else order
        return {(kind, d): lmconv_mask(order, H, W, self.arch.kernel, d, kind, device) for kind, d in MASK_KINDS}

    def network_input(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, C·E, H, W) -> (B, C·E + 1, H, W) with a constant channel of ones."""
        return torch.cat([z, torch.ones_like(z[:, :1])], dim=1)

    def network(self, z: torch.Tensor, cond: Condition, order: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, C·E, H, W) -> params (B, P, H, W), causal in ``order`` (H·W,) (None: the first
        listed order, or in training a random one: ``own_order``)."""
        return self.layers(WholeMaps(self.masks(order, z.device)), self.network_input(z), cond)

    def layers(self, run: WholeMaps | AtPosition, z: torch.Tensor, cond: Condition) -> torch.Tensor:
        """The network written once for whole maps and for one position (``run``): z the
        network input (B, C·E + 1, H, W) -> params (B, P, H, W); at a position, z the stepper's
        flat input maps (n, H·W, C·E + 1) -> params (n, P, 1, 1)."""
        biases = dict(zip(self.gated, self.class_bias(cond.labels, cond.augment)))
        groups = self.groups
        u = run.conv_input(self.stem, z)  # (B, F, ...)
        stored = [u]
        for g, blocks in enumerate(groups.up):
            if g:
                u = run.conv(groups.up_links[g - 1], u)
                stored.append(u)
            for block in blocks:
                u = self.checkpointed(block, run, u, None, biases[block])
                stored.append(u)
        u = stored.pop()
        for g, blocks in enumerate(groups.down):
            if g:
                u = run.conv(groups.down_links[g - 1], u)
            for block in blocks:
                u = self.checkpointed(block, run, u, stored.pop(), biases[block])
        return self.out(F.elu(u))  # (B, P, ...)

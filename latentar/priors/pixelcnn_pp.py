"""PixelCNN++ (Salimans et al. 2017, "PixelCNN++: Improving the PixelCNN with Discretized
Logistic Mixture Likelihood and Other Modifications").

Two streams of gated residual blocks (``latentar.nn.shifted``):

- u, built from down-shifted convs: position (h, w) sees only rows above h;
- ul, built from down-right-shifted convs plus u: (h, w) sees rows above and the
  pixels left of w on row h.

The first layers shift their outputs so that no position sees its own pixel. An up
pass of ``stages`` resolutions (stride-2 downsampling between them) stores every
block's output; a down pass (stride-2 transposed convs between resolutions) feeds
them back as short-cut connections. Whole pixels are the unit of conditioning: the
head couples the channels of a pixel. Class conditioning adds a learned per-class
bias inside every gated block; a spatial context (codes known in full, ``supports_context``)
goes through a non-causal ``ContextNet`` to features at the grid's size, and a 1×1
convolution of them enters every gated block in the same place
(``latentar.nn.conditioning.context_biases``), read at the positions attached to the
block's stage (every 2^s-th row and column).

Fast sampling (``PassStepper``) is incremental (``latentar.nn.passes``): the u stream
once per row (``rows_above``), the ul stream once per position (``at_position``), each
level only at the positions attached to it, every conv evaluated from cached input maps;
the context bias maps are computed once per generation and read at the stepped position.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Sequence, cast

import torch
import torch.nn.functional as F
from torch import nn

from latentar.checks import DEPTH, DEPTH_OR_NONE, FRACTION, Checked
from latentar.nn.conditioning import class_biases, context_biases
from latentar.nn.shifted import (
    GatedResBlock,
    Nin,
    down_right_shifted_conv,
    down_right_shifted_deconv,
    down_shifted_conv,
    down_shifted_deconv,
)
from latentar.priors.base import register_prior
from latentar.priors.condition import Condition
from latentar.priors.layer_cache import PassPrior, PassStepper
from latentar.priors.spec import PriorSpec


@dataclass
class PixelCNNppArch(Checked):
    label = "pixelcnn_pp"
    bounds = {"dropout": FRACTION, "num_blocks": DEPTH, "context_blocks": DEPTH_OR_NONE}

    filters: int = 64  # F: features of both streams (paper: 160)
    num_blocks: int = 3  # gated residual blocks per stage in the up pass (paper: 5)
    stages: int = 3  # resolutions; stage s runs at stride 2^s (paper: 3)
    dropout: float = 0.5  # inside every gated block (paper: 0.5)
    context_hidden: int = 64  # width of the context network (spatial context only)
    context_blocks: int = 2  # non-causal residual blocks of the context network


class Stream(nn.Module):
    """One stream's layers: an up pass and a down pass of gated blocks with resampling."""

    # nn.ModuleLists of nn.ModuleLists: per stage, its gated blocks
    up_blocks: Sequence[Sequence[GatedResBlock]]
    down_blocks: Sequence[Sequence[GatedResBlock]]

    def __init__(self, arch: PixelCNNppArch, conv, down, up, aux_up: int, aux_down: int):
        super().__init__()
        F_, R, S = arch.filters, arch.num_blocks, arch.stages
        block = partial(GatedResBlock, F_, conv, dropout=arch.dropout)
        up_blocks = nn.ModuleList(nn.ModuleList(block(aux_up) for _ in range(R)) for _ in range(S))
        # The down pass has one more block per stage below the top: it consumes the
        # resampled map that the up pass stored at that stage.
        down_blocks = nn.ModuleList(nn.ModuleList(block(aux_down) for _ in range(R + (s < S - 1)))
                                    for s in range(S))
        self.up_blocks = cast(Sequence[Sequence[GatedResBlock]], up_blocks)
        self.down_blocks = cast(Sequence[Sequence[GatedResBlock]], down_blocks)
        self.downsample = nn.ModuleList(down(F_, F_, stride=2) for _ in range(S - 1))
        self.upsample = nn.ModuleList(up(F_, F_, stride=2) for _ in range(S - 1))


@register_prior("pixelcnn_pp")
class PixelCNNpp(PassPrior):
    Arch = PixelCNNppArch
    presets = {
        "tiny": dict(filters=4, num_blocks=1, stages=2, dropout=0.0, context_hidden=4, context_blocks=1),
        "small": dict(filters=32, num_blocks=2, stages=3, dropout=0.1, context_hidden=32),
        "default": {},
        "paper": dict(filters=160, num_blocks=5, stages=3, dropout=0.5, context_hidden=128),
    }
    channel_masked = False
    supports_context = True
    full_context = True  # down- and down-right-shifted streams cover the whole past
    Stepper = PassStepper
    checkpointable = True  # every gated block goes through ``checkpointed``

    def __init__(self, spec: PriorSpec, arch: PixelCNNppArch):
        super().__init__(spec, arch)
        C = spec.shape[0]
        F_ = arch.filters
        inputs = C * self.input.dim + 1  # + a channel of ones that tells real inputs from padding
        self.u_init = down_shifted_conv(inputs, F_, (2, 3), shift=True)  # rows above
        self.ul_init_above = down_shifted_conv(inputs, F_, (1, 3), shift=True)  # the row above
        self.ul_init_left = down_right_shifted_conv(inputs, F_, (2, 1), shift_right=True)  # left, and up-left
        self.u = Stream(arch, partial(down_shifted_conv, kernel=(2, 3)), down_shifted_conv,
                        down_shifted_deconv, aux_up=0, aux_down=F_)
        self.ul = Stream(arch, partial(down_right_shifted_conv, kernel=(2, 2)), down_right_shifted_conv,
                         down_right_shifted_deconv, aux_up=F_, aux_down=2 * F_)
        # every gated block, in a fixed order, and the stage it runs at
        placed = [(block, s) for stream in (self.u, self.ul) for stages in (stream.up_blocks, stream.down_blocks)
                  for s, stage in enumerate(stages) for block in stage]
        self.gated, self.gated_stages = [block for block, _ in placed], [s for _, s in placed]
        sizes = [2 * F_] * len(self.gated)
        self.class_bias = class_biases(spec.label_rows, sizes, spec.augment_sizes)
        self.context_bias = context_biases(spec.context_symbols, arch.context_hidden, arch.context_blocks, sizes)
        self.out = Nin(F_, self.head.num_params)

    # ---- the network, written once for whole maps and for generation steps ----------
    def levels(self) -> list[tuple[int, int]]:
        """(H, W) at each stage; strided shifted convs give ceil(size / 2)."""
        _, H, W = self.spec.shape
        return [(-(-H // 2 ** s), -(-W // 2 ** s)) for s in range(self.arch.stages)]

    def network_input(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, C·E, H, W) -> (B, C·E + 1, H, W) with a constant channel of ones."""
        return torch.cat([z, torch.ones_like(z[:, :1])], dim=1)

    def given(self, cond: Condition, size: tuple[int, int]) -> dict:
        """Per gated block: (class bias (B, 2F), its stage s, context bias map (B, 2F, ⌈H/2^s⌉, ⌈W/2^s⌉):
        the grid's map at the positions attached to stage s), a bias or map None where not given."""
        biases = self.class_bias(cond.labels, cond.augment)
        maps = self.context_bias(cond.context, size)
        return {block: (bias, s, None if grid is None else grid[:, :, ::2 ** s, ::2 ** s])
                for block, s, bias, grid in zip(self.gated, self.gated_stages, biases, maps)}

    def rows_above(self, run, z: torch.Tensor, biases: dict) -> None:
        """The u stream (rows above); its block outputs are shared with the ul stream through ``run``."""
        S, stream = self.arch.stages, self.u
        u = run.conv_input(self.u_init, z)  # (B, F, H, W)
        skips = [u]
        for s in range(S):
            if s:
                u = run.down(stream.downsample[s - 1], u, s)
                if u is None:  # this stage is not due at this step, nor any above it
                    break
                skips.append(u)
            for r, block in enumerate(stream.up_blocks[s]):
                u = self.checkpointed(block, run, u, None, *biases[block])
                run.share(("up", s, r), u, s)
                skips.append(u)
        u = skips.pop() if run.due(S - 1) else None
        for s in reversed(range(S)):
            if run.due(s):
                for r, block in enumerate(stream.down_blocks[s]):
                    u = self.checkpointed(block, run, u, skips.pop(), *biases[block])
                    run.share(("down", s, r), u, s)
            if s:
                u = run.up(stream.upsample[s - 1], u, s - 1)

    def at_position(self, run, z: torch.Tensor, biases: dict) -> torch.Tensor:
        """The ul stream (above and left) -> head params (B, P, H, W) (or one row / position)."""
        S, stream = self.arch.stages, self.ul
        ul = run.conv_input(self.ul_init_above, z) + run.conv_input(self.ul_init_left, z)
        skips = [ul]
        for s in range(S):
            if s:
                ul = run.down(stream.downsample[s - 1], ul, s)
                if ul is None:
                    break
                skips.append(ul)
            for r, block in enumerate(stream.up_blocks[s]):
                ul = self.checkpointed(block, run, ul, run.shared(("up", s, r), s), *biases[block])
                skips.append(ul)
        ul = skips.pop() if run.due(S - 1) else None
        for s in reversed(range(S)):
            if run.due(s):
                for r, block in enumerate(stream.down_blocks[s]):
                    aux = torch.cat([run.shared(("down", s, r), s), skips.pop()], dim=1)  # (B, 2F, ...)
                    ul = self.checkpointed(block, run, ul, aux, *biases[block])
            if s:
                ul = run.up(stream.upsample[s - 1], ul, s - 1)
        return self.out(F.elu(ul))  # (B, P, ...)

"""Diagonal BiLSTM (van den Oord et al. 2016, "Pixel Recurrent Neural Networks", section 3.2).

A 7×7 mask-A convolution, then residual Diagonal BiLSTM layers, then two ReLU → 1×1
mask-B layers to the head's params. One layer runs two diagonal LSTMs over its input:

- left-to-right: the input is skewed (row i shifted right by i) so that diagonals
  become columns; the gates of skewed cell (i, j) are a 1×1 mask-B input-to-state
  convolution plus a 2×1 convolution of the previous column's states at (i-1, j-1) and
  (i, j-1), which in image coordinates are the states directly above and to the left.
  Unskewed, the state at (i, w) sees the whole quadrant {(i', w'): i' <= i, w' <= w}.
- right-to-left: the same on the horizontally flipped input; its state at (i, w)
  sees {i' <= i, w' >= w}, which includes the future of row i, so its output map is
  shifted down one row before the two directions are summed: position (i, w) takes the
  right-to-left state of (i-1, w), which sees only rows above. Because of that shift its
  input-to-state convolution needs no mask, and its input is the layer input
  concatenated with the raw input z (the embedded symbols, every channel).

Why the raw input: the layer input comes from the mask-A convolution, in which the
last pixel of a row, x(i, W-1), appears only at later positions (row i+1 and below);
the right-to-left state of row i would never see it, and the left-to-right stream at
(i+1, w) sees row i+1 only up to w, so for w < W-1 - first_kernel//2 the pixel
x(i, W-1) would be a blind spot. With z, the right-to-left state at (i, w) reads every
pixel {i' <= i, w' >= w} of the input itself. All channels of those rows precede every
channel of row i+1, so z needs no channel mask either. Every layer reads z (the first
alone would close the blind spot; reading it everywhere keeps the layers alike for a
few parameters each).

Together the two directions cover every earlier pixel. The state-to-state convolutions need no
channel mask: they read states of strictly earlier positions only, so every state
group may feed every gate group; the groups at (i, w) itself are kept apart by the
mask-B input-to-state convolution and the elementwise cell update. Class conditioning
adds a learned per-class bias to the gates of both directions of every layer.

The paper's binarized-MNIST model (79.20 nats) is a 7-layer Diagonal BiLSTM with h = 16
("paper_mnist", with 64-wide output layers of our choosing); on CIFAR-10 it trains 12
layers with h = 128 and two 1024-wide output layers ("paper").

Sampling is exact and incremental (the ``DiagonalBiLSTM`` docstring says how).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from latentar.checks import DEPTH, Checked
from latentar.nn.lstm import GATES, RecurrentStack, in_step_order, lstm_cell, lstm_step, skew, step_matrix, unskew
from latentar.nn.masked import MaskedConv2d
from latentar.nn.stepping import conv_parts
from latentar.priors.base import PriorSpec, register_prior
from latentar.priors.recurrent import RecurrentPrior


@dataclass
class DiagonalBiLSTMArch(Checked):
    label = "diagonal_bilstm"
    bounds = {"num_layers": DEPTH}

    hidden: int = 32  # h: LSTM state units per direction; layers pass 2h features (paper: 128)
    num_layers: int = 4  # Diagonal BiLSTM layers (paper: 12 on CIFAR-10, 7 on MNIST)
    first_kernel: int = 7  # kernel of the mask-A input convolution
    output_hidden: int = 128  # width of the two 1×1 output layers (paper: 1024)


@dataclass
class DirectionCache:
    """One direction evaluated one position at a time along rows, gates in step order
    (``latentar.nn.lstm.in_step_order``), weights reordered and masked once per generation.
    Per-column states are lists: index w+1 holds column w, index 0 the zero state left of it."""

    matrix: torch.Tensor  # (I + 2S, 4S): input-to-state, then K_ss on the state above, to the left
    bias: torch.Tensor  # (n, 4S): every gate bias, class bias included
    above: list  # the row above's hidden states (n, S) by column (zeros above row 0)
    hidden: list  # this row's hidden states
    cell: list  # this row's cells


@dataclass
class BiCache:
    ltr: DirectionCache
    rtl: DirectionCache  # kept in flipped columns: image column w at W-1-w
    proj: tuple[torch.Tensor, torch.Tensor]  # the projection as (matrix (S, F), bias (F,))
    inputs: list  # the layer input (n, F) of this row by column


class DiagonalLSTM(nn.Module):
    """One direction, left to right: a (B, F, H, W) -> hidden states (B, S, H, W)."""

    def __init__(self, features: int, state: int, groups: int, masked: bool):
        super().__init__()
        self.groups, self.state = groups, state
        self.input_to_state = (MaskedConv2d(features, GATES * state, 1, "B", groups) if masked
                               else nn.Conv2d(features, GATES * state, 1))
        # the 2×1 kernel over the previous skewed column: taps (i-1, j-1) and (i, j-1)
        self.state_to_state = nn.Linear(2 * state, GATES * state)

    def recurrent(self, above: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
        """K_ss on the states above and to the left in image coordinates (the previous
        skewed column's (i-1, j-1) and (i, j-1)): (B, S, ...) each -> (B, 4S, ...)."""
        taps = torch.cat([above, left], dim=1)  # (B, 2S, ...)
        return torch.movedim(self.state_to_state(torch.movedim(taps, 1, -1)), -1, 1)

    def forward(self, a: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        B, _, H, W = a.shape
        gates = skew(self.input_to_state(a) + bias[:, :, None, None])  # (B, 4S, H, W+H-1)
        valid = skew(a.new_ones(1, 1, H, W))  # (1, 1, H, W+H-1): 1 on image cells
        hidden = cell = a.new_zeros(B, self.state, H)  # one skewed column
        columns = []
        for j in range(gates.shape[-1]):
            above = F.pad(hidden, (1, 0))[..., :H]  # (B, S, H): row i holds row i-1's state
            hidden, cell = lstm_cell(gates[..., j] + self.recurrent(above, hidden), cell, self.groups)
            # padding cells keep zero states, so row i starts from zeros as in ``evaluate_at``
            hidden, cell = hidden * valid[..., j], cell * valid[..., j]
            columns.append(hidden)  # (B, S, H)
        return unskew(torch.stack(columns, dim=-1), W)

    # ---- one position at a time, for ``DiagonalBiLSTMLayer`` --------------------------------
    def new_cache(self, bias: torch.Tensor, W: int) -> DirectionCache:
        """Empty states for rows of width W; bias (n, 4S) the class bias of the gates."""
        input_matrix, input_bias = step_matrix(self.input_to_state, self.groups)  # (I, 4S), (4S,)
        state_matrix, state_bias = step_matrix(self.state_to_state, self.groups)  # (2S, 4S), (4S,)
        bias = in_step_order(bias, self.groups, dim=1) + input_bias + state_bias
        zeros = bias.new_zeros(bias.shape[0], self.state)
        return DirectionCache(torch.cat([input_matrix, state_matrix]), bias, [zeros] * W,
                              [zeros] * (W + 1), [zeros] * (W + 1))

    def next_row(self, cache: DirectionCache) -> None:
        """The row's states become the row above."""
        zeros = cache.hidden[0]
        cache.above, cache.hidden, cache.cell = cache.hidden[1:], [zeros] * len(cache.hidden), [zeros] * len(cache.cell)

    def step(self, cache: DirectionCache, w: int, *inputs: torch.Tensor) -> torch.Tensor:
        """The state at column w of the row from its input there (the concatenation of
        ``inputs``, (n, ·) each) -> hidden (n, S); stores it."""
        taps = torch.cat([*inputs, cache.above[w], cache.hidden[w]], dim=1)  # (n, I + 2S)
        cache.hidden[w + 1], cache.cell[w + 1] = lstm_step(torch.addmm(cache.bias, taps, cache.matrix), cache.cell[w])
        return cache.hidden[w + 1]


class DiagonalBiLSTMLayer(nn.Module):
    """a (B, F, H, W), z (B, R, H, W) -> a + proj(left-to-right on a + right-to-left on
    [a, z] shifted down) (B, F, H, W); R = C·E raw input channels."""

    def __init__(self, features: int, state: int, groups: int, raw: int):
        super().__init__()
        self.state, self.raw = state, raw
        self.bias_size = 2 * GATES * state  # both directions
        self.ltr = DiagonalLSTM(features, state, groups, masked=True)
        self.rtl = DiagonalLSTM(features + raw, state, groups, masked=False)
        self.proj = MaskedConv2d(state, features, 1, "B", groups)

    def forward(self, a: torch.Tensor, bias: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        H = a.shape[2]
        ltr_bias, rtl_bias = bias.chunk(2, dim=1)
        ltr = self.ltr(a, ltr_bias)  # (B, S, H, W)
        rtl = self.rtl(torch.cat([a, z], dim=1).flip(-1), rtl_bias).flip(-1)  # (B, S, H, W)
        rtl = F.pad(rtl, (0, 0, 1, 0))[:, :, :H]  # (i, w) takes (i-1, w): no look at row i
        return a + self.proj(ltr + rtl)

    # ---- one position at a time (the ``RecurrentLayer`` protocol) -------------------------
    def new_cache(self, bias: torch.Tensor, H: int, W: int) -> BiCache:
        ltr_bias, rtl_bias = bias.chunk(2, dim=1)
        proj = conv_parts(self.proj)
        assert proj.bias is not None  # the projection has a bias
        return BiCache(self.ltr.new_cache(ltr_bias, W), self.rtl.new_cache(rtl_bias, W),
                       (proj.matrix.t(), proj.bias), [None] * W)

    def begin_row(self, cache: BiCache, i: int) -> None:
        """Row i-1's left-to-right states become the row above (its right-to-left states
        were finished by ``end_row``)."""
        self.ltr.next_row(cache.ltr)

    def evaluate_at(self, cache: BiCache, i: int, w: int, a: torch.Tensor) -> torch.Tensor:
        """The layer at (i, w) from a (n, F) there -> (n, F); stores the left-to-right state,
        and a for the right-to-left pass of ``end_row``."""
        W = len(cache.inputs)
        cache.inputs[w] = a
        ltr = self.ltr.step(cache.ltr, w, a)  # (n, S)
        rtl = cache.rtl.hidden[W - w]  # right-to-left state of (i-1, w), zeros at i = 0
        return torch.addmm(a, ltr + rtl, cache.proj[0]).add_(cache.proj[1])

    def end_row(self, cache: BiCache, i: int, z: torch.Tensor) -> None:
        """Row i is complete, z (n, R, W) its raw input: run the right-to-left direction along
        it (read from row i+1 on)."""
        W = len(cache.inputs)
        self.rtl.next_row(cache.rtl)
        raw = z.unbind(-1)  # (n, R) by column
        for w in range(W):  # flipped column w is image column W-1-w
            self.rtl.step(cache.rtl, w, cache.inputs[W - 1 - w], raw[W - 1 - w])


@register_prior("diagonal_bilstm")
class DiagonalBiLSTM(RecurrentPrior):
    """Incremental sampling (``RecurrentStepper``):

    The left-to-right state at (i, w) needs only the states above and to the left and
    the layer input at (i, w), so it is computed when pixel (i, w) is drawn. The
    right-to-left state at (i, w) needs all of row i, but is first used at (i+1, w)
    (the one-row shift), so it is computed once per finished row, right to left.
    Per pixel this costs C one-position passes through the layers plus one
    right-to-left cell step per layer: O(L) per symbol instead of a whole-grid pass,
    O(H·W·L·(C + 1)) for a whole grid instead of O((H·W)²·L·C). Draws match
    ``naive_sample`` exactly for the same generator.
    """

    Arch = DiagonalBiLSTMArch
    full_context = True  # both directions, the right-to-left one shifted down a row
    presets = {
        "tiny": dict(hidden=6, num_layers=2, output_hidden=12),
        "small": dict(hidden=16, num_layers=2, output_hidden=64),
        "default": {},
        "paper_mnist": dict(hidden=16, num_layers=7, output_hidden=64),
        "paper": dict(hidden=128, num_layers=12, output_hidden=1024),
    }

    def __init__(self, spec: PriorSpec, arch: DiagonalBiLSTMArch):
        super().__init__(spec, arch)
        raw = spec.shape[0] * self.input.dim  # C·E
        self.body = RecurrentStack(
            spec.shape[0], self.input.dim, arch.hidden, arch.num_layers, arch.first_kernel,
            arch.output_hidden, self.head.num_params, spec.label_rows,
            lambda features, state, groups: DiagonalBiLSTMLayer(features, state, groups, raw),
            spec.augment_sizes)

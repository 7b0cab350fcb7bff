"""Row LSTM (van den Oord et al. 2016, "Pixel Recurrent Neural Networks", section 3.1).

A 7×7 mask-A convolution, then residual Row LSTM layers, then two ReLU → 1×1 mask-B
layers to the head's params. A Row LSTM layer processes the image one row at a time,
top to bottom. Its gates at (i, w) are

    K_is ⊛ a  : a k×1 mask-B convolution along row i (taps (i, w-1..w); groups <= g at w)
    K_ss ⊛ h  : a k-wide 1-D convolution of row i-1's hidden states (taps w-1..w+1)

so each state sees a triangle of rows above it. The state-to-state convolution needs
no channel mask: row i-1 lies wholly before (i, w) in raster order, so every state
group there may feed every gate group. The channel groups at (i, w) itself are kept
apart by the input-to-state mask and by the cell update being elementwise. Class
conditioning adds a learned per-class bias to every layer's gates.

The paper trains a 12-layer Row LSTM with h = 128 on CIFAR-10 (two 1024-wide output
layers): the "paper" preset. "small" is sized for binarized 28×28 MNIST on a CPU.

Sampling is exact and incremental (the ``RowLSTM`` docstring says how).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from latentar.checks import DEPTH, Checked
from latentar.nn.lstm import GATES, RecurrentStack, in_step_order, lstm_cell, lstm_step
from latentar.nn.masked import MaskedConv2d
from latentar.nn.stepping import conv_parts
from latentar.nn.windows import RowSplit
from latentar.priors.base import PriorSpec, register_prior
from latentar.priors.recurrent import RecurrentPrior


@dataclass
class RowLSTMArch(Checked):
    label = "row_lstm"
    bounds = {"num_layers": DEPTH}

    hidden: int = 32  # h: LSTM state units; layers pass 2h features between them (paper: 128)
    num_layers: int = 4  # Row LSTM layers (paper: 12)
    first_kernel: int = 7  # kernel of the mask-A input convolution
    kernel: int = 3  # k: width of the input-to-state and state-to-state convolutions
    output_hidden: int = 128  # width of the two 1×1 output layers (paper: 1024)


@dataclass
class RowCache:
    """One layer's states while it is evaluated one position at a time; gates in step order
    (``latentar.nn.lstm.in_step_order``), weights reordered and masked once per generation."""

    input_to_state: RowSplit  # the input-to-state conv along the row, one position at a time
    state_to_state: tuple[torch.Tensor, torch.Tensor]  # its conv1d weight (4S, S, k), bias (n, 4S, 1)
    proj: tuple[torch.Tensor, torch.Tensor]  # the projection as (matrix (S, F), bias (F,))
    hidden: list  # the current row's hidden states (n, S) by column (at first: zeros, above row 0)
    cell: list  # the current row's cells (n, S) by column
    cell_above: Sequence = ()  # the row above's cells (n, S) by column
    recurrent: tuple = ()  # per column (n, 4S): K_ss ⊛ (the row above's hidden states) + the biases


class RowLSTMLayer(nn.Module):
    """a (B, F, H, W) -> a + proj(RowLSTM(a)) (B, F, H, W)."""

    def __init__(self, features: int, state: int, kernel: int, groups: int):
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"the Row LSTM kernel must be odd, got {kernel}")
        self.groups, self.state = groups, state
        self.bias_size = GATES * state
        self.input_to_state = MaskedConv2d(features, GATES * state, (1, kernel), "B", groups)
        self.state_to_state = nn.Conv1d(state, GATES * state, kernel, padding=kernel // 2)
        self.proj = MaskedConv2d(state, features, 1, "B", groups)

    def forward(self, a: torch.Tensor, bias: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """a (B, F, H, W), bias (B, 4S) -> (B, F, H, W); the raw input z is not read."""
        B, _, H, W = a.shape
        gates = self.input_to_state(a) + bias[:, :, None, None]  # (B, 4S, H, W)
        hidden = cell = a.new_zeros(B, self.state, W)
        rows = []
        for i in range(H):
            hidden, cell = lstm_cell(gates[:, :, i] + self.state_to_state(hidden), cell, self.groups)
            rows.append(hidden)  # (B, S, W)
        return a + self.proj(torch.stack(rows, dim=2))

    # ---- one position at a time (the ``RecurrentLayer`` protocol) -------------------------
    def new_cache(self, bias: torch.Tensor, H: int, W: int) -> RowCache:
        parts = conv_parts(self.input_to_state)
        assert parts.bias is not None and self.state_to_state.bias is not None  # the gate convs have biases
        parts = parts._replace(weight=in_step_order(parts.weight, self.groups),
                               matrix=in_step_order(parts.matrix, self.groups),
                               bias=in_step_order(parts.bias, self.groups))
        weight = in_step_order(self.state_to_state.weight, self.groups)  # (4S, S, k)
        biases = in_step_order(bias + self.state_to_state.bias, self.groups, dim=1)  # (n, 4S)
        proj = conv_parts(self.proj)
        assert proj.bias is not None  # so has the projection
        zeros = [bias.new_zeros(bias.shape[0], self.state)] * W
        split = RowSplit.of(self.input_to_state, parts, (H, W))
        assert split is not None  # a mask-B conv along the row reads the row's own positions
        return RowCache(split, (weight, biases[:, :, None]), (proj.matrix.t(), proj.bias), zeros, zeros)

    def begin_row(self, cache: RowCache, i: int) -> None:
        """Convolve row i-1's finished states once: every position of row i reads them."""
        weight, bias = cache.state_to_state
        above = torch.stack(cache.hidden, dim=-1)  # (n, S, W): row i-1's hidden states
        cache.recurrent = (F.conv1d(above, weight, padding=weight.shape[-1] // 2) + bias).unbind(2)
        cache.cell_above, cache.hidden, cache.cell = cache.cell, list(cache.hidden), list(cache.cell)

    def evaluate_at(self, cache: RowCache, i: int, w: int, a: torch.Tensor) -> torch.Tensor:
        """The layer at (i, w) from a (n, F) there -> (n, F); stores the states at (i, w)."""
        gates = cache.input_to_state.at(i, w, a) + cache.recurrent[w]  # (n, 4S)
        cache.hidden[w], cache.cell[w] = lstm_step(gates, cache.cell_above[w])  # (n, S) each
        return torch.addmm(a, cache.hidden[w], cache.proj[0]).add_(cache.proj[1])

    def end_row(self, cache: RowCache, i: int, z: torch.Tensor) -> None:
        """Nothing is left to do: every state of row i was computed during the row."""


@register_prior("row_lstm")
class RowLSTM(RecurrentPrior):
    """Incremental sampling (``RecurrentStepper``):

    A state at (i, w) depends only on row i-1's states and the layer input at
    (i, w-1..w), so each row starts by convolving the finished row above once and then
    computes one position per step: per symbol, O(layers) work on one position
    instead of a whole-grid pass (C position evaluations per pixel). Draws match
    ``naive_sample`` exactly for the same generator.
    """

    Arch = RowLSTMArch
    presets = {
        "tiny": dict(hidden=6, num_layers=2, output_hidden=12),
        "small": dict(hidden=16, num_layers=3, output_hidden=64),
        "default": {},
        "paper": dict(hidden=128, num_layers=12, output_hidden=1024),
    }

    def __init__(self, spec: PriorSpec, arch: RowLSTMArch):
        super().__init__(spec, arch)
        self.body = RecurrentStack(
            spec.shape[0], self.input.dim, arch.hidden, arch.num_layers, arch.first_kernel,
            arch.output_hidden, self.head.num_params, spec.label_rows,
            lambda features, state, groups: RowLSTMLayer(features, state, arch.kernel, groups),
            spec.augment_sizes)

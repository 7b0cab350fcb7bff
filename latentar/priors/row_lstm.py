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

import torch
from torch import nn

from latentar.checks import Checked
from latentar.nn.incremental import ConvParts, PaddedMap, conv_parts, conv_window
from latentar.nn.lstm import GATES, RecurrentStack, lstm_cell, pointwise
from latentar.nn.masked import MaskedConv2d
from latentar.priors.base import PriorSpec, register_prior
from latentar.priors.recurrent import RecurrentPrior


@dataclass
class RowLSTMArch(Checked):
    label = "row_lstm"

    hidden: int = 32  # h: LSTM state units; layers pass 2h features between them (paper: 128)
    num_layers: int = 4  # Row LSTM layers (paper: 12)
    first_kernel: int = 7  # kernel of the mask-A input convolution
    kernel: int = 3  # k: width of the input-to-state and state-to-state convolutions
    output_hidden: int = 128  # width of the two 1×1 output layers (paper: 1024)


@dataclass
class RowCache:
    """One layer's states while it is evaluated one position at a time."""

    input_to_state: ConvParts  # the input-to-state conv, masked once per generation
    inputs: PaddedMap  # the layer input (n, F, H, W + k - 1), written one position at a time
    hidden: torch.Tensor  # (n, S, H+1, W): row i's states at index i+1, zeros on top
    cell: torch.Tensor  # (n, S, H+1, W)
    recurrent: torch.Tensor | None = None  # K_ss ⊛ (row i-1's hidden states), (n, 4S, W)


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

    # ---- one position at a time (the ``RecurrentStack`` protocol) -------------------------
    def new_cache(self, n: int, H: int, W: int, device: torch.device) -> RowCache:
        states = torch.zeros(n, self.state, H + 1, W, device=device)
        parts = conv_parts(self.input_to_state)
        inputs = PaddedMap(n, self.input_to_state.in_channels, (H, W), parts.pad, states)
        return RowCache(parts, inputs, states, states.clone())

    def begin_row(self, cache: RowCache, i: int) -> None:
        """Convolve row i-1's finished states once: every position of row i reads them."""
        cache.recurrent = self.state_to_state(cache.hidden[:, :, i])  # (n, 4S, W)

    def evaluate_at(self, cache: RowCache, i: int, w: int, a: torch.Tensor, z: torch.Tensor,
                    bias: torch.Tensor) -> torch.Tensor:
        """The layer at (i, w) from a (n, F) there -> (n, F); stores the states at (i, w)."""
        cache.inputs.write(a[:, :, None, None], i, w)
        gates = conv_window(cache.input_to_state, cache.inputs.data, i, w).flatten(1)  # (n, 4S)
        gates = gates + bias + cache.recurrent[:, :, w]
        hidden, cell = lstm_cell(gates, cache.cell[:, :, i, w], self.groups)  # (n, S) each
        cache.hidden[:, :, i + 1, w], cache.cell[:, :, i + 1, w] = hidden, cell
        return a + pointwise(self.proj, hidden)

    def end_row(self, cache: RowCache, i: int, bias: torch.Tensor) -> None:
        """Nothing is left to do: every state of row i was computed during the row."""


@register_prior("row_lstm")
class RowLSTM(RecurrentPrior):
    """Incremental sampling (``RecurrentStepper``):

    A state at (i, w) depends only on row i-1's states and the layer input at
    (i, w-1..w), so each row starts by convolving the finished row above once and then
    computes one position per step: per symbol, O(layers) work on one position
    instead of a whole-grid pass (C + 1 position evaluations per pixel). Draws match
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
            lambda features, state, groups: RowLSTMLayer(features, state, arch.kernel, groups))

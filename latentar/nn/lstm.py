"""PixelRNN building blocks: skewing, the LSTM cell, and the residual recurrent stack.

Both PixelRNN layers (Row LSTM, Diagonal BiLSTM) compute their four gates as an
input-to-state convolution of the layer input plus a state-to-state convolution of
earlier hidden states, then run the LSTM cell update of van den Oord et al. 2016, eq. 3:

    [o, f, i, g] = [σ, σ, σ, tanh](K_ss ⊛ h_prev + K_is ⊛ a)
    c = f ⊙ c_prev + i ⊙ g,    h = o ⊙ tanh(c)

Gates are laid out (group, gate, unit) so that a masked convolution's channel group g
(image channel g, R→G→B) produces all four gates of state group g. A layer maps its
input ``a (B, F, H, W)`` to ``a + proj(h)`` (the paper's residual connection, F = 2h
features in, h state units, a 1×1 mask-B projection back to F).

``RecurrentStack`` is the network both priors share: a mask-A input convolution, the
residual recurrent layers, and two ReLU → 1×1 mask-B output layers.

Besides the whole-grid ``forward``, every layer evaluates itself one position at a time,
in raster order, from a cache of its own earlier states (the four methods of
``RecurrentLayer``), and so does the stack. That is the layers' own arithmetic, nothing
more: when to evaluate, and any drawing of symbols, belongs to the prior's stepper
(``latentar.priors.recurrent``).
A position step is a chain of tiny ops, so the steps lay their gates out in ``STEP_ORDER``
(each gate one contiguous block, ``lstm_step``), with the weights reordered once per
generation (``in_step_order``), and keep per-column states in Python lists.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from latentar.nn.conditioning import class_biases
from latentar.nn.masked import MaskedConv2d, masked_output, round_to_groups
from latentar.nn.passes import StepPass
from latentar.nn.stepping import linear_parts
from latentar.nn.windows import as_matrix, as_position

GATES = 4  # input, forget, output, content


def skew(x: torch.Tensor) -> torch.Tensor:
    """Shift row i right by i: (B, F, H, W) -> (B, F, H, W + H - 1), zeros elsewhere.

    Column j of the result holds the diagonal {(i, j - i)}, so one step along the
    columns advances every diagonal at once.
    """
    B, Fe, H, W = x.shape
    flat = F.pad(x, (0, H)).flatten(2)  # (B, F, H·(W+H)): each row padded by H zeros
    return flat[:, :, : H * (W + H - 1)].reshape(B, Fe, H, W + H - 1)  # row i starts i later


def unskew(x: torch.Tensor, width: int) -> torch.Tensor:
    """Inverse of ``skew``: (B, F, H, width + H - 1) -> (B, F, H, width)."""
    B, Fe, H, L = x.shape
    if L != width + H - 1:
        raise ValueError(f"a skewed map of height {H} and width {width} has {width + H - 1} "
                         f"columns, got {L}")
    flat = F.pad(x.flatten(2), (0, H))  # (B, F, H·(L+1))
    return flat.reshape(B, Fe, H, L + 1)[..., :width]


def lstm_cell(gates: torch.Tensor, cell: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """gates (B, 4·S, ...) in (group, gate, unit) order, cell (B, S, ...) -> (hidden, cell)."""
    i, f, o, g = rearrange(gates, "b (grp q s) ... -> q b (grp s) ...", grp=groups, q=GATES)
    cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(cell), cell


def in_step_order(gates: torch.Tensor, groups: int, dim: int = 0) -> torch.Tensor:
    """Gate entries along ``dim`` (4S of them) from (group, gate, unit) order to (gate, group,
    unit) order, ``lstm_step``'s: gate q is then the block q·S..(q+1)·S in the state's order."""
    return gates.unflatten(dim, (groups, GATES, -1)).transpose(dim, dim + 1).flatten(dim, dim + 2)


def lstm_step(gates: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``lstm_cell`` at one position with gates (n, 4S) in step order (``in_step_order``),
    cell (n, S) -> (hidden, cell), each (n, S)."""
    S = cell.shape[1]
    i, f, o = torch.sigmoid(gates[:, :3 * S]).chunk(3, dim=1)
    cell = torch.addcmul(f * cell, i, torch.tanh(gates[:, 3 * S:]))
    return o * torch.tanh(cell), cell


def step_matrix(layer: nn.Module, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A 1×1 gate layer (a masked 1×1 conv or a Linear) as (matrix (I, 4S), bias (4S,)) for
    ``torch.addmm``, its gates in step order."""
    matrix, bias = linear_parts(layer)
    assert bias is not None, "gate layers have a bias"
    return in_step_order(matrix, groups).t(), in_step_order(bias, groups)


class RecurrentLayer(Protocol):
    """A PixelRNN layer: over the whole grid, and one position at a time in raster order.

    ``bias_size``: the class-bias entries it adds to its gates. ``forward(a, bias, z) -> a'``
    over the whole grid: a (B, F, H, W) its input, bias (B, bias_size), z the stack's raw
    input, which a layer may read or ignore. One position at a time, the positions (i, w)
    coming in raster order:

    - ``new_cache(bias, H, W)``: an empty cache of the layer's states for n grids of H×W
      with gate biases bias (n, bias_size);
    - ``begin_row(cache, i)``: rows < i are final; prepare what row i reads from them;
    - ``evaluate_at(cache, i, w, a) -> (n, F)``: the layer's output at (i, w) from its input
      a (n, F) there and the stored states of earlier positions; stores the states of
      (i, w). It may be called again at (i, w) with new inputs: the last call's states are
      the ones kept;
    - ``end_row(cache, i, z)``: row i is final, z (n, C·E, W) its raw input; compute what
      only a complete row gives.
    """

    bias_size: int

    def __call__(self, a: torch.Tensor, bias: torch.Tensor, z: torch.Tensor) -> torch.Tensor: ...

    def new_cache(self, bias: torch.Tensor, H: int, W: int) -> Any: ...

    def begin_row(self, cache: Any, i: int) -> None: ...

    def evaluate_at(self, cache: Any, i: int, w: int, a: torch.Tensor) -> torch.Tensor: ...

    def end_row(self, cache: Any, i: int, z: torch.Tensor) -> None: ...


class RecurrentStack(nn.Module):
    """z (B, C·E, H, W) -> params (B, P, H, W): mask-A conv, residual recurrent layers, output.

    ``label_rows`` is the number of rows of the class-bias table (the classes, and the null
    class of classifier-free guidance; None: unconditional), ``augment_sizes`` the values of each
    augmentation type it is conditioned on (``ClassBiases``). ``make_layer(features, state,
    groups)`` builds one ``RecurrentLayer``.

    One position at a time the stack follows its layers' protocol: ``new_caches`` for n grids,
    then in raster order ``begin_row(caches, i)`` at a row's first position,
    ``evaluate_at(caches, run, z, i, w)`` -> params (n, P) at (i, w), as often as the
    position's input changes, and ``end_row(caches, i, z_row)`` once row i is final.
    """

    layers: Sequence[RecurrentLayer]  # an nn.ModuleList of modules that follow the protocol

    def __init__(self, channels: int, embed_dim: int, hidden: int, num_layers: int, first_kernel: int,
                 output_hidden: int, num_params: int, label_rows: int | None,
                 make_layer: Callable[[int, int, int], RecurrentLayer], augment_sizes: Sequence[int] = ()):
        super().__init__()
        if num_layers < 1 or hidden < 1:
            raise ValueError(f"need num_layers >= 1 and hidden >= 1, got {num_layers} and {hidden}")
        features = round_to_groups(2 * hidden, channels)
        state = round_to_groups(hidden, channels)
        out_hidden = round_to_groups(output_hidden, channels)
        self.first = MaskedConv2d(channels * embed_dim, features, first_kernel, "A", channels)
        layers = (cast(nn.Module, make_layer(features, state, channels)) for _ in range(num_layers))
        self.layers = cast(Sequence[RecurrentLayer], nn.ModuleList(layers))
        self.bias_sizes = [layer.bias_size for layer in self.layers]
        self.class_bias = class_biases(label_rows, self.bias_sizes, augment_sizes)  # a bias on every gate
        self.out = masked_output(features, out_hidden, num_params, channels)

    def biases(self, labels: torch.Tensor | None, augment: torch.Tensor | None, batch: int,
               device: torch.device) -> list[torch.Tensor]:
        """Each layer's gate bias (B, bias_size): the learned biases of the labels and augmentation
        ids (long (B,) or None), or zeros."""
        return [torch.zeros(batch, size, device=device) if bias is None else bias
                for bias, size in zip(self.class_bias(labels, augment), self.bias_sizes)]

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None, augment: torch.Tensor | None) -> torch.Tensor:
        a = self.first(z)  # (B, F, H, W)
        for layer, bias in zip(self.layers, self.biases(labels, augment, z.shape[0], z.device)):
            a = layer(a, bias, z)  # (B, F, H, W)
        return self.out(a)  # (B, P, H, W)

    # ---- one position at a time -------------------------------------------------------
    def new_caches(self, labels: torch.Tensor | None, augment: torch.Tensor | None, batch: int,
                   size: tuple[int, int], device: torch.device) -> list:
        """Every layer's empty cache for ``batch`` grids of ``size`` (H, W)."""
        biases = self.biases(labels, augment, batch, device)
        return [layer.new_cache(bias, *size) for layer, bias in zip(self.layers, biases)]

    def begin_row(self, caches: list, i: int) -> None:
        for layer, cache in zip(self.layers, caches):
            layer.begin_row(cache, i)

    def evaluate_at(self, caches: list, run: StepPass, z: torch.Tensor, i: int, w: int) -> torch.Tensor:
        """Params (n, P) at (i, w): the input conv of z (n, C·E, H, W), complete up to the
        symbol drawn next, through ``run``; every layer at (i, w); the output layers."""
        a = as_matrix(run.conv_input(self.first, z))  # (n, F)
        for layer, cache in zip(self.layers, caches):
            a = layer.evaluate_at(cache, i, w, a)  # (n, F)
        return as_matrix(run.pointwise(self.out, as_position(a)))  # (n, P)

    def end_row(self, caches: list, i: int, z_row: torch.Tensor) -> None:
        """Row i is final; z_row (n, C·E, W) its raw input."""
        for layer, cache in zip(self.layers, caches):
            layer.end_row(cache, i, z_row)

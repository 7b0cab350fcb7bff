"""PixelRNN layers (Row LSTM, Diagonal BiLSTM): skewing, the cell, receptive fields, and
exact incremental sampling against the generic sampler."""

from __future__ import annotations

import pytest
import torch
from prior_cases import tiny_prior
from test_fast_sampling import TOL, assert_same_draws, traced_draws

import latentar
from latentar.nn.lstm import lstm_cell, skew, unskew
from latentar.priors.diagonal_bilstm import DiagonalBiLSTMLayer
from latentar.priors.row_lstm import RowLSTMLayer
from latentar.receptive_field import raster_past, receptive_field

PIXELRNNS = ["row_lstm", "diagonal_bilstm"]


def test_skew_shifts_row_i_right_by_i_and_unskew_inverts_it():
    x = torch.arange(1, 7).float().view(1, 1, 2, 3)  # rows [1 2 3], [4 5 6]
    expected = torch.tensor([[1, 2, 3, 0], [0, 4, 5, 6]]).float()
    assert torch.equal(skew(x)[0, 0], expected)
    y = torch.randn(2, 3, 4, 5)
    assert torch.equal(unskew(skew(y), 5), y)
    with pytest.raises(ValueError, match="has 8 columns, got 7"):
        unskew(torch.zeros(1, 1, 4, 7), 5)


def test_lstm_cell_by_hand_with_channel_groups():
    # 2 groups of 1 unit: channels are (group 0: i f o g), (group 1: i f o g)
    gates = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 100.0, -100.0, 1.0]).view(1, 8)
    cell = torch.tensor([[2.0, 3.0]])
    h, c = lstm_cell(gates, cell, groups=2)
    c0 = 0.5 * 2.0 + 0.5 * torch.tanh(torch.tensor(0.0))  # i = f = o = 1/2, g = tanh(0)
    c1 = 1.0 * 3.0 + 0.5 * torch.tanh(torch.tensor(1.0))  # f = 1 keeps the cell, o = 0 hides it
    assert torch.allclose(c, torch.stack([c0, c1])[None])
    assert torch.allclose(h, torch.stack([0.5 * torch.tanh(c0), torch.tensor(0.0)])[None], atol=1e-30)


def _dependence(layer: torch.nn.Module, H: int, W: int, i: int, w: int, z: torch.Tensor) -> torch.Tensor:
    """Which positions of the layer input a the output at (i, w) depends on -> bool (H, W);
    z is the raw input (1, R, H, W)."""
    torch.manual_seed(0)
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.5)
    a = torch.randn(1, layer.proj.out_channels, H, W, requires_grad=True)
    out = layer(a, torch.zeros(1, layer.bias_size), z)
    (grad,) = torch.autograd.grad(out[0, :, i, w].sum(), a)
    return grad[0].abs().sum(0) > 0


def test_row_lstm_layer_sees_a_triangle_above():
    H, W, i, w = 4, 9, 3, 4
    seen = _dependence(RowLSTMLayer(features=2, state=2, kernel=3, groups=1), H, W, i, w,
                       torch.randn(1, 1, H, W))
    expected = torch.zeros(H, W, dtype=torch.bool)
    expected[i, w - 1:w + 1] = True  # k×1 mask-B input-to-state: (i, w-1), (i, w)
    for r in range(i):  # each row up widens by one on both sides
        expected[r, max(w - (i - r) - 1, 0):w + (i - r) + 1] = True
    assert torch.equal(seen, expected)


def test_diagonal_bilstm_layer_sees_the_whole_past():
    H, W, i, w = 4, 5, 2, 2
    layer = DiagonalBiLSTMLayer(features=2, state=2, groups=1, raw=1)
    seen = _dependence(layer, H, W, i, w, torch.randn(1, 1, H, W))
    expected = torch.zeros(H, W, dtype=torch.bool)
    expected[:i] = True  # every earlier row, through both directions
    expected[i, :w + 1] = True  # the row so far, through the left-to-right direction
    assert torch.equal(seen, expected)
    # the raw input z enters only the right-to-left direction, shifted down one row: the
    # quadrant above and to the right, corner (i-1, W-1) included
    z = torch.randn(1, 1, H, W, requires_grad=True)
    out = layer(torch.randn(1, 2, H, W), torch.zeros(1, layer.bias_size), z)
    (grad,) = torch.autograd.grad(out[0, :, i, w].sum(), z)
    expected = torch.zeros(H, W, dtype=torch.bool)
    expected[:i, w:] = True
    assert torch.equal(grad[0].abs().sum(0) > 0, expected)


@pytest.mark.parametrize("preset", ["tiny", "small"])
@pytest.mark.parametrize("C", [1, 3])
def test_diagonal_bilstm_prior_sees_every_earlier_pixel(C, preset):
    # the corner x(h-1, W-1) lies beyond the mask-A conv's reach of row h: only the
    # right-to-left direction's raw input brings it in
    shape = (C, 9, 9)
    torch.manual_seed(0)
    prior = latentar.build_prior("diagonal_bilstm", shape, 4, preset=preset)
    for position in [(4, 4), (4, 0), (1, 0), (1, 1), (0, 5), (8, 8), (3, 8)]:
        field = receptive_field(prior, position)
        assert torch.equal(field, raster_past(shape, position)), f"{position}\n{field.int()}"


@pytest.mark.parametrize("name", PIXELRNNS)
@pytest.mark.parametrize("shape, K, kwargs", [
    ((1, 3, 4), 4, {}),
    ((3, 2, 3), 5, {"num_classes": 3}),
    ((1, 3, 3), 6, {"symbols": "codes", "embed_dim": 3, "num_classes": 2}),
    ((1, 2, 3), 16, {"head": "logistic_mixture"}),
], ids=["gray", "rgb-classes", "codes-classes", "logistic"])
def test_fast_sampling_equals_naive_sampling(name, shape, K, kwargs):
    prior = tiny_prior(name, shape, K, **kwargs)
    n = 5
    cond = torch.arange(n) % kwargs["num_classes"] if "num_classes" in kwargs else None
    assert_same_draws(prior, n, cond, seed=3)
    fast, fast_calls = traced_draws(prior, "sample", n, cond, seed=3)
    C, H, W = shape
    assert [c for c, _, _ in fast_calls] == list(range(C)) * (H * W)  # channel-masked: one call a symbol
    # and the params of the finished sample are what a teacher-forced pass computes
    with torch.no_grad():
        full = prior(fast, cond)  # (n, P, H, W); channel c's params were computed from channels < c
    for step, (c, _, params) in enumerate(fast_calls):
        h, w = divmod(step // C, W)
        block = slice(None) if C == 1 else slice(c * K, (c + 1) * K)  # categorical: block c
        expected = full[:, block, h, w]
        assert ((params[:, block] - expected).abs() <= TOL + TOL * expected.abs()).all(), (h, w, c)


def _record(calls: list, layer: torch.nn.Module, method: str, monkeypatch) -> None:
    """Append (method, row, column or None) to ``calls`` at each call of ``layer.<method>``."""
    original = getattr(layer, method)

    def recording(cache, i, *rest):
        calls.append((method, i, rest[0] if method == "evaluate_at" else None))
        return original(cache, i, *rest)

    monkeypatch.setattr(layer, method, recording)


@pytest.mark.parametrize("name", PIXELRNNS)
def test_stepper_evaluates_each_pixel_c_times_and_each_row_once(name, monkeypatch):
    C, H, W = 3, 2, 3
    prior = tiny_prior(name, (C, H, W), 4)
    calls = []
    for method in ("begin_row", "evaluate_at", "end_row"):
        _record(calls, prior.body.layers[0], method, monkeypatch)
    prior.sample(2, generator=torch.Generator().manual_seed(0))
    expected = []
    for i in range(H):  # once per channel draw (the last call's states are final); rows begin and end once
        expected += [("begin_row", i, None)] + [("evaluate_at", i, w) for w in range(W) for _ in range(C)]
        expected.append(("end_row", i, None))
    assert calls == expected


@pytest.mark.parametrize("name", PIXELRNNS)
def test_fast_sampling_with_temperature_top_k_and_single_label(name):
    prior = tiny_prior(name, (1, 2, 3), 6, num_classes=2).train()
    args = dict(temperature=0.7, top_k=3)
    naive = prior.naive_sample(4, 1, generator=torch.Generator().manual_seed(5), **args)
    fast = prior.sample(4, 1, generator=torch.Generator().manual_seed(5), **args)
    assert torch.equal(fast, naive) and prior.training
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        prior.sample(2, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="class-conditional"):
        prior.sample(2)


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="must be odd, got 2"):
        tiny_prior("row_lstm", (1, 3, 3), 4, kernel=2)
    assert tiny_prior("diagonal_bilstm", (3, 2, 2), 4, head="logistic_mixture").head.per_channel  # not refused
    with pytest.raises(ValueError, match=r"row_lstm.num_layers must be an integer in \[1, 1024\], got 0"):
        tiny_prior("row_lstm", (1, 3, 3), 4, num_layers=0)

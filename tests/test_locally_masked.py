"""Locally masked convolutions: masks against a loop over positions, the layer against a
per-location reference, ``step`` against the whole layer."""

from __future__ import annotations

import pytest
import torch

from latentar.nn.locally_masked import LocallyMaskedConv2d, lmconv_mask, tap_reads
from latentar.nn.masked import causal_mask


def raster(H: int, W: int) -> torch.Tensor:
    return torch.arange(H * W)


def s_curve(H: int, W: int) -> torch.Tensor:
    rows = torch.arange(H * W).view(H, W)
    rows[1::2] = rows[1::2].flip(1)
    return rows.flatten()


def random_order(H: int, W: int, seed: int = 0) -> torch.Tensor:
    return torch.randperm(H * W, generator=torch.Generator().manual_seed(seed))


ORDERS = {"raster": raster, "s_curve": s_curve, "random": random_order}


def slow_mask(order: torch.Tensor, H: int, W: int, kernel: int, dilation: int, kind: str) -> torch.Tensor:
    """The masks by walking the order: a tap is allowed when its position was generated already."""
    mask = torch.zeros(kernel * kernel, H * W)
    done: set[tuple[int, int]] = set()
    half = kernel // 2
    for p in order.tolist():
        h, w = divmod(p, W)
        for i in range(kernel * kernel):
            dr, dc = i // kernel - half, i % kernel - half
            if (h + dr * dilation, w + dc * dilation) in done or (kind == "B" and dr == dc == 0):
                mask[i, p] = 1
        done.add((h, w))
    return mask


@pytest.mark.parametrize("order_name", list(ORDERS))
@pytest.mark.parametrize("kernel,dilation", [(3, 1), (3, 2), (5, 1), (5, 2)])
@pytest.mark.parametrize("kind", ["A", "B"])
def test_mask_equals_the_walk_over_the_order(order_name, kernel, dilation, kind):
    H, W = 5, 6
    order = ORDERS[order_name](H, W)
    mask = lmconv_mask(order, H, W, kernel, dilation, kind)
    assert mask.shape == (kernel * kernel, H * W)
    assert torch.equal(mask, slow_mask(order, H, W, kernel, dilation, kind))


def test_raster_type_a_mask_is_pixelcnns_mask_a_inside_the_grid():
    H, W = 4, 5
    mask = lmconv_mask(raster(H, W), H, W, 3, 1, "A")  # (9, H·W)
    pixelcnn = causal_mask(1, 1, (3, 3), "A", 1)[0, 0].flatten()  # (9,)
    for p in range(H * W):
        h, w = divmod(p, W)
        inside = torch.tensor([0 <= h + i // 3 - 1 < H and 0 <= w + i % 3 - 1 < W for i in range(9)])
        assert torch.equal(mask[:, p], pixelcnn * inside), p


def test_masks_are_cached_and_bad_orders_refused():
    order = random_order(3, 4)
    assert lmconv_mask(order, 3, 4) is lmconv_mask(order.clone(), 3, 4)
    with pytest.raises(ValueError, match=r"shape \(12,\)"):
        lmconv_mask(torch.arange(11), 3, 4)
    with pytest.raises(ValueError, match="odd kernel"):
        LocallyMaskedConv2d(2, 3, kernel=4)
    with pytest.raises(ValueError, match="'A' or 'B'"):
        LocallyMaskedConv2d(2, 3, kind="C")
    with pytest.raises(ValueError, match=r"mask of shape \(9, 12\) here, got \(9, 11\)"):
        LocallyMaskedConv2d(2, 3)(torch.zeros(1, 2, 3, 4), torch.ones(9, 11))


def reference_output(conv: LocallyMaskedConv2d, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each location's output from its own masked kernel, position by position."""
    B, _, H, W = x.shape
    k, d = conv.kernel, conv.dilation
    out = torch.zeros(B, conv.weight.shape[0], H, W, dtype=torch.float64)
    for p in range(H * W):
        h, w = divmod(p, W)
        total = conv.bias.double().expand(B, -1).clone()
        for i in range(k * k):
            r, c = h + (i // k - k // 2) * d, w + (i % k - k // 2) * d
            if 0 <= r < H and 0 <= c < W:
                total += mask[i, p].double() * (x[:, :, r, c].double() @ conv.weight[:, :, i].double().T)
        out[:, :, h, w] = total
    return out


@pytest.mark.parametrize("kernel,dilation,kind", [(3, 1, "A"), (3, 2, "B"), (5, 1, "B")])
def test_layer_equals_the_per_location_reference(kernel, dilation, kind):
    torch.manual_seed(0)
    H, W = 4, 5
    conv = LocallyMaskedConv2d(3, 4, kernel, dilation, kind)
    x = torch.randn(2, 3, H, W)
    for order in (random_order(H, W), s_curve(H, W)):
        mask = lmconv_mask(order, H, W, kernel, dilation, kind)
        assert torch.allclose(conv(x, mask).double(), reference_output(conv, x, mask), atol=1e-5)


@pytest.mark.parametrize("kernel,dilation,kind", [(3, 1, "A"), (3, 2, "B"), (5, 1, "B")])
def test_step_equals_the_layer_at_each_position(kernel, dilation, kind):
    torch.manual_seed(1)
    H, W = 4, 5
    conv = LocallyMaskedConv2d(3, 4, kernel, dilation, kind)
    x = torch.randn(2, 3, H, W)
    mask = lmconv_mask(random_order(H, W), H, W, kernel, dilation, kind)
    full = conv(x, mask).flatten(2)  # (2, 4, H·W)
    for p in range(H * W):
        at = torch.tensor([p, p])
        step = conv.step(x.flatten(2).mT, tap_reads(at, H, W, kernel, dilation), mask[:, at].T)
        assert torch.allclose(step, full[:, :, p], atol=1e-6), p
    each = torch.tensor([3, H * W - 1])  # each grid at its own position
    step = conv.step(x.flatten(2).mT, tap_reads(each, H, W, kernel, dilation), mask[:, each].T)
    assert torch.allclose(step, full[[0, 1], :, each], atol=1e-6)

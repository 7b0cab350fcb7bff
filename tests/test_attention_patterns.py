"""The transformer's attention patterns: each mask against its definition written out slot by slot,
the field a prior's gradients show against those masks composed over its layers (a position sees
nothing its pattern excludes), the ring KV cache, block-raster generation and completion, presets."""

from __future__ import annotations

import pytest
import torch
from prior_cases import every_grid, tiny_prior

import latentar
import latentar.nn.transformer as transformer_layers
from latentar.checks import FieldError
from latentar.nn.attention_patterns import AttentionPattern, pattern_block_mask, pattern_mask, ring_rows, span
from latentar.priors import Condition
from latentar.priors.engine import Knobs, draw_grids
from latentar.priors.orders import block_raster
from latentar.priors.transformer import Transformer, TransformerStepper


def reference_block_raster(H: int, W: int, r: int, c: int) -> list[int]:
    """Block rows, blocks left to right, then rows and columns inside a block (cut at the edges)."""
    return [y * W + x for top in range(0, H, r) for left in range(0, W, c)
            for y in range(top, min(top + r, H)) for x in range(left, min(left + c, W))]


def reference_sees(arch: dict, grid: tuple[int, int], i: int, j: int) -> bool:
    """Whether query slot i attends to key slot j, from the papers' definitions."""
    if j > i:
        return False
    if j == i:
        return True
    name, b, stride, c = arch["attention"], arch.get("block"), arch.get("stride"), arch.get("summary")
    if name == "local_1d":
        return i // b - j // b in (0, 1)
    if name == "local_2d":
        (H, W), (r, cols) = grid, arch["block"]
        order = reference_block_raster(H, W, r, cols)
        (yi, xi), (yj, xj) = divmod(order[i], W), divmod(order[j], W)
        top, left = yi // r * r, xi // cols * cols  # the query's block; its flange is the block's size
        return top - r <= yj < top + r and left - cols <= xj < left + 2 * cols
    layer = arch["layer"]
    if layer == "strided_row":
        return i - j < stride
    if layer == "strided_column":
        return (i - j) % stride == 0
    if layer == "fixed_block":
        return i // stride == j // stride
    if layer == "fixed_summary":
        return j % stride >= stride - c
    raise AssertionError(layer)


def reference_mask(arch: dict, grid: tuple[int, int]) -> torch.Tensor:
    n = grid[0] * grid[1]
    return torch.tensor([[reference_sees(arch, grid, i, j) for j in range(n)] for i in range(n)])


GRID = (6, 6)
LAYERS = {  # id -> (arch of the prior, the arch of each layer for ``reference_sees``)
    "local_1d": dict(attention="local_1d", block=4),
    "local_2d": dict(attention="local_2d", block=[2, 3]),
    "strided_row": dict(attention="strided", stride=5, layout="strided_row"),
    "strided_column": dict(attention="strided", stride=5, layout="strided_column"),
    "fixed_block": dict(attention="fixed", stride=4, summary=2, layout="fixed_block"),
    "fixed_summary": dict(attention="fixed", stride=4, summary=2, layout="fixed_summary"),
}


def layer_reference(arch: dict, name: str) -> dict:
    return dict(arch, layer=name)


@pytest.mark.parametrize("H,W,r,c", [(4, 4, 2, 2), (3, 5, 2, 2), (6, 4, 3, 1), (5, 5, 5, 5), (2, 7, 1, 3)])
def test_block_raster_is_a_permutation_in_block_order(H, W, r, c):
    order = block_raster(H, W, r, c)
    assert torch.equal(order.sort().values, torch.arange(H * W))
    assert order.tolist() == reference_block_raster(H, W, r, c)
    with pytest.raises(ValueError, match="integers >= 1"):
        block_raster(H, W, 0, c)


@pytest.mark.parametrize("layer", LAYERS, ids=list(LAYERS))
def test_each_mask_is_its_definition_inside_causal(layer):
    arch = LAYERS[layer]
    prior = latentar.build_prior("transformer", (1, *GRID), 4, preset="tiny", **arch)
    pattern = prior.blocks[0].attention.pattern
    n = GRID[0] * GRID[1]
    mask = pattern_mask(pattern, n)
    assert torch.equal(mask, reference_mask(layer_reference(arch, layer), GRID))
    assert not mask.triu(1).any() and mask.diagonal().all()
    assert not mask.all(), "the pattern must drop some earlier slot on this grid"


def measured_field(prior: Transformer) -> torch.Tensor:
    """bool (N, H·W): row p (a position) says which positions' inputs move log p at p."""
    C, H, W = prior.spec.shape
    x = torch.randint(0, prior.spec.num_symbols, (8, C, H, W), generator=torch.Generator().manual_seed(0))
    z = prior.input(x).detach().requires_grad_()
    lp = prior.head.log_prob(prior.network(z, Condition()), x)  # (8, C, H, W)
    rows = []
    for p in range(H * W):
        (grad,) = torch.autograd.grad(lp[:, 0, p // W, p % W].sum(), z, retain_graph=True)
        rows.append(grad.abs().sum((0, 1)).flatten() > 0)
    return torch.stack(rows)


@pytest.mark.parametrize("layer", LAYERS, ids=list(LAYERS))
@pytest.mark.parametrize("depth", [1, 2])
def test_a_position_sees_exactly_what_its_patterns_reach(layer, depth):
    """Gradients: log p at the position slot i predicts moves with the input of slot j's position
    order[j - 1] (inputs are shifted by one slot) iff the layers' masks, composed, join i to j:
    zero at every earlier position the pattern excludes, nonzero at every one it reaches."""
    arch = LAYERS[layer]
    prior = tiny_prior("transformer", (1, *GRID), 4, num_layers=depth, **arch)
    n = GRID[0] * GRID[1]
    mask = reference_mask(layer_reference(arch, layer), GRID).float()
    field = torch.eye(n)
    for _ in range(depth):
        field = ((mask @ field) > 0).float()
    order = prior.orders[0]
    expected = torch.zeros(n, n, dtype=torch.bool)  # (position, position seen)
    for i in range(n):
        for j in range(1, i + 1):
            expected[order[i], order[j - 1]] = bool(field[i, j])
    assert torch.equal(measured_field(prior), expected)
    assert prior.full_context == bool(field[1:, :].bool().equal(torch.ones(n, n).tril().bool()[1:, :]))


@pytest.mark.parametrize("layer", ["local_1d", "local_2d", "strided_row", "fixed_summary"])
def test_a_sub_pixel_sees_exactly_what_its_pattern_reaches_over_slots(layer):
    """Sub-pixel tokens, one layer: the patterns index the N = C·H·W slots (local_2d cuts the
    (H, W·C) slot grid), so log p of the sub-pixel that slot i predicts moves with the sub-pixel
    slot j holds (the one slot j - 1 predicts) iff the mask joins i to j."""
    arch, (C, H, W) = LAYERS[layer], (3, 2, 4)
    prior = tiny_prior("transformer", (C, H, W), 4, num_layers=1, tokens="subpixel", **arch)
    n, grid = C * H * W, (H, W * C)
    mask = reference_mask(layer_reference(arch, layer), grid)
    assert not mask.all(), "the pattern must drop some earlier slot on this grid"
    keys = torch.tensor(reference_block_raster(*grid, *arch["block"]) if layer == "local_2d" else range(n))
    x = torch.randint(0, 4, (8, C, H, W), generator=torch.Generator().manual_seed(0))
    z = prior.input(x).detach().requires_grad_()
    lp = prior.head.log_prob(prior.network(z, Condition()), x)  # (8, C, H, W)
    lp = lp.permute(0, 2, 3, 1).flatten(1)  # (8, N) by key: position · C + channel
    for i in range(n):
        (grad,) = torch.autograd.grad(lp[:, keys[i]].sum(), z, retain_graph=True)
        seen = grad.view(8, C, -1, H, W).abs().sum((0, 2)).permute(1, 2, 0).flatten() > 0  # (N,) by key
        expected = torch.zeros(n, dtype=torch.bool)
        expected[keys[:i]] = mask[i, 1:i + 1]
        assert torch.equal(seen, expected), f"slot {i}"


def test_full_context_follows_the_pattern_and_the_depth():
    shape = (1, *GRID)
    assert latentar.build_prior("transformer", shape, 4, preset="tiny").full_context
    assert latentar.build_prior("transformer", shape, 4, preset="tiny", attention="strided", stride=6).full_context
    shallow = latentar.build_prior("transformer", shape, 4, preset="tiny", attention="local_1d", block=4)
    deep = latentar.build_prior("transformer", shape, 4, preset="tiny", attention="local_1d", block=4, num_layers=9)
    assert not shallow.full_context and deep.full_context  # one block further back per layer: 9 blocks of 4


class RecordingStepper(TransformerStepper):
    """The transformer's fast stepper, keeping what it visited and its cache."""

    last: RecordingStepper

    def __init__(self, *args):
        super().__init__(*args)
        self.visited: list[int] = []
        RecordingStepper.last = self

    def params(self, h, w, c):
        self.visited.append(h * self.x.shape[-1] + w)
        return super().params(h, w, c)


def draw_recorded(prior, n=2, **knobs):
    x = torch.zeros(n, *prior.spec.shape, dtype=torch.long)
    samples = draw_grids(prior, x, Condition(), Knobs(**knobs), stepper=RecordingStepper,
                         generator=torch.Generator().manual_seed(0))
    return samples, RecordingStepper.last


def test_the_kv_cache_keeps_only_what_a_pattern_can_still_reach():
    shape = (1, 4, 5)
    local = tiny_prior("transformer", shape, 5, attention="local_1d", block=3)
    _, stepper = draw_recorded(local)
    assert [kv.keys.shape[2] for kv in stepper.cache.kv.values()] == [6, 6]  # this block and the previous one
    strided = tiny_prior("transformer", shape, 5, attention="strided", stride=4)
    _, stepper = draw_recorded(strided)
    assert [kv.keys.shape[2] for kv in stepper.cache.kv.values()] == [4, 17]  # previous 4; every 4th: 16 back
    full = tiny_prior("transformer", shape, 5)
    _, stepper = draw_recorded(full)
    assert [kv.keys.shape[2] for kv in stepper.cache.kv.values()] == [20, 20]


def test_sub_pixel_rings_and_block_raster_order_count_slots():
    shape = (3, 2, 4)  # N = 24 sub-pixel slots
    local = tiny_prior("transformer", shape, 5, tokens="subpixel", attention="local_1d", block=3)
    _, stepper = draw_recorded(local)
    assert [kv.keys.shape[2] for kv in stepper.cache.kv.values()] == [6, 6]  # this block of 3 slots and the previous
    plane = tiny_prior("transformer", shape, 5, tokens="subpixel", attention="local_2d", block=[1, 6])
    order = block_raster(2, 4, 1, 2)  # blocks of 1×6 sub-pixels: 1×2 pixels
    assert torch.equal(plane.orders[0], order)
    _, stepper = draw_recorded(plane)
    assert stepper.visited == order.repeat_interleave(3).tolist()  # a position's 3 channels in turn


def test_patterns_refuse_what_sub_pixels_and_any_order_cannot_mean():
    with pytest.raises(FieldError, match="order_embedding = true cannot go with attention = 'local_2d'"):
        Transformer.make_arch("tiny", attention="local_2d", block=2, order_embedding=True)
    with pytest.raises(FieldError, match=r"block's columns \(4\) must be a multiple of the 3 channels"):
        latentar.build_prior("transformer", (3, 4, 4), 5, preset="tiny", tokens="subpixel", attention="local_2d",
                             block=[2, 4])


@pytest.mark.parametrize("ahead", [0, 2])
@pytest.mark.parametrize("layer", LAYERS, ids=list(LAYERS))
def test_ring_rows_read_the_slots_the_mask_allows(layer, ahead):
    prior = latentar.build_prior("transformer", (1, *GRID), 4, preset="tiny", **LAYERS[layer])
    pattern: AttentionPattern = prior.blocks[0].attention.pattern
    n = GRID[0] * GRID[1]
    mask, R = pattern_mask(pattern, n), span(pattern, n) + ahead  # a ring with room for early writes
    rows = ring_rows(pattern, n, R)
    for i in range(n):
        read = sorted(i - (i - place) % R for place in rows[i].nonzero().flatten().tolist())
        assert read == mask[i].nonzero().flatten().tolist()


def test_local_2d_generates_in_block_raster_order_and_completes_a_prefix_of_it():
    prior = tiny_prior("transformer", (1, 4, 4), 3, attention="local_2d", block=2)
    order = block_raster(4, 4, 2, 2)
    assert torch.equal(prior.orders, order[None])
    _, stepper = draw_recorded(prior)
    assert stepper.visited == order.tolist()
    x = torch.randint(0, 3, (3, 1, 4, 4))
    done = prior.redraw(x, 2, generator=torch.Generator().manual_seed(0))  # two block rows: a prefix
    assert torch.equal(done[:, :, :2], x[:, :, :2])
    with pytest.raises(ValueError, match="prefix of that order"):
        prior.redraw(x, 1)  # one row of a block row: not a prefix of block-raster order
    with pytest.raises(ValueError, match="listed orders only"):
        prior.sample(2, order=torch.arange(16))


def test_local_2d_conditionals_on_a_prefix_of_its_order_are_normalized():
    prior = tiny_prior("transformer", (1, 2, 2), 3, attention="local_2d", block=[2, 1])  # order 0, 2, 1, 3
    known = torch.tensor([[True, False], [True, False]])  # the left column: the first two of its order
    given = torch.tensor([2, 0])
    grids = every_grid((1, 2, 2), 3)
    grids = grids[(grids[:, 0, :, 0] == given).all(1)]  # every completion of the known column
    with torch.no_grad():
        total = prior.log_prob(grids, known=known).exp().sum()
    assert abs(total.item() - 1) < 1e-5
    with pytest.raises(ValueError, match="prefix of that order"):
        prior.log_prob(grids, known=~known)


@pytest.mark.parametrize("fields,message", [
    (dict(attention="local_1d"), "transformer.block is required with attention = 'local_1d'"),
    (dict(attention="local_1d", block=[2, 2]), "block must be one integer"),
    (dict(attention="strided"), "transformer.stride is required"),
    (dict(attention="fixed", stride=4), "transformer.summary is required"),
    (dict(attention="fixed", stride=4, summary=5), r"summary \(5\) must be at most transformer.stride \(4\)"),
    (dict(attention="full", stride=4), "transformer.stride is not used with attention = 'full'"),
    (dict(attention="strided", stride=4, layout="strided_row,local_1d"), r"names \['local_1d'\], not patterns"),
    (dict(attention="sparse"), r"transformer.attention must be one of \['full', 'local_1d'"),
    (dict(attention="local_2d", block=[2, 0]), r"transformer.block must be an integer >= 1 or a list of 2"),
])
def test_bad_pattern_fields_name_the_problem(fields, message):
    with pytest.raises(FieldError, match=message):
        Transformer.make_arch("tiny", **fields)


def test_the_papers_presets():
    image = Transformer.make_arch("image_transformer_cifar")
    assert (image.width, image.num_layers, image.heads, image.attention, image.block) == (512, 12, 4, "local_1d", 256)
    sparse = Transformer.make_arch("sparse_transformer_cifar")
    assert image.tokens == sparse.tokens == "subpixel"  # the papers' slots: N = 3072 at 3×32×32
    assert sparse.layer_patterns[:5] == ("strided_column", "strided_row", "strided_row", "strided_row",
                                         "strided_column") and len(sparse.layer_patterns) == 128
    spec = latentar.PriorSpec(shape=(3, 32, 32), num_symbols=256)
    with torch.device("meta"):
        counts = {name: sum(p.numel() for p in Transformer(spec, Transformer.make_arch(name)).parameters())
                  for name in ("image_transformer_cifar", "sparse_transformer_cifar")}
    assert round(counts["image_transformer_cifar"], -4) == 38_390_000  # the README's 38.39M
    assert round(counts["sparse_transformer_cifar"], -4) == 67_750_000  # and 67.75M


def test_a_patterned_prior_saves_and_loads(tmp_path):
    prior = tiny_prior("transformer", (3, 4, 6), 5, attention="local_2d", block=[2, 3])
    prior.save(tmp_path / "m")
    loaded = latentar.load(tmp_path / "m").eval()
    x = torch.randint(0, 5, (2, 3, 4, 6))
    assert loaded.arch.block == (2, 3) and torch.equal(loaded.orders, prior.orders)
    with torch.no_grad():
        assert torch.equal(loaded.log_prob(x), prior.log_prob(x))


def test_the_block_mask_skips_exactly_the_tiles_a_pattern_never_reads():
    n, tile = 512, 128
    for pattern in (AttentionPattern("local_1d", block=128), AttentionPattern("strided", stride=64)):
        dense = pattern_mask(pattern, n)
        read = dense.view(n // tile, tile, n // tile, tile).any(dim=3).any(dim=1)  # (tiles, tiles): any slot read
        assert torch.equal(pattern_block_mask(pattern, n).to_dense()[0, 0].bool(), read)
    assert pattern_block_mask(AttentionPattern("local_1d", block=128), n).sparsity() > 0


class FlexSpy:
    """Counts the calls of the compiled FlexAttention kernel."""

    def __init__(self, monkeypatch):
        self.calls = 0
        kernel = transformer_layers.compiled_flex_attention()

        def counted(*args, **kwargs):
            self.calls += 1
            return kernel(*args, **kwargs)

        monkeypatch.setattr(transformer_layers, "compiled_flex_attention", lambda: counted)


def test_the_flex_kernel_scores_like_sdpa_and_trains_through_sdpa_on_the_cpu(monkeypatch):
    arch = dict(width=16, heads=2, attention="strided", stride=16, tokens="subpixel")
    dense = tiny_prior("transformer", (3, 8, 8), 8, **arch).eval()
    sparse = tiny_prior("transformer", (3, 8, 8), 8, **arch).eval()
    sparse.load_state_dict(dense.state_dict())
    sparse.set_attention_kernel("flex")
    assert sparse.arch.kernel == "flex"
    with pytest.raises(FieldError, match="kernel"):
        sparse.set_attention_kernel("dense")
    x = torch.randint(0, 8, (2, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    spy = FlexSpy(monkeypatch)
    with torch.no_grad():
        torch.testing.assert_close(sparse.log_prob(x), dense.log_prob(x), rtol=1e-5, atol=1e-4)
    assert spy.calls == sparse.arch.num_layers  # every layer's pass went through FlexAttention
    sparse.loss(x).backward()  # torch has no CPU backward for it: the same mask through sdpa
    dense.loss(x).backward()
    assert spy.calls == sparse.arch.num_layers
    for (name, a), b in zip(sparse.named_parameters(), dense.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)

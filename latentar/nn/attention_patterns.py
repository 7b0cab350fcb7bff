"""Attention patterns: which earlier slots each query slot of a causal Transformer may attend to.

A pattern is a boolean mask over the N slots of a sequence, bool (N, N), True where query slot i
may attend to key slot j; every pattern lies inside inclusive causal attention (j <= i) and keeps
the diagonal (a slot always sees itself). A Transformer prior's slot i predicts the i-th position
of its order and holds the symbols of the one before (the inputs are shifted by one slot), so a
pattern over slots is a pattern over the positions they predict. The layer patterns:

    full            every earlier slot
    local_1d        Image Transformer (Parmar et al. 2018), local 1-D: the slots cut into query
                    blocks of ``block`` b; a query sees its own block (causally) and the whole
                    previous one: i // b - j // b <= 1
    local_2d        Image Transformer, local 2-D: the grid cut into query blocks of r×c positions,
                    generated in block-raster order (``block_raster``); a query sees the generated
                    part of its memory region, tensor2tensor's ``masked_local_attention_2d`` with a
                    memory flange of the block's size: the r rows above its block and its block's
                    rows, from c columns left of its block to c columns right of it (what is
                    right of its block in its own block row comes later, so causality drops it)
    strided_row     Sparse Transformer (Child et al. 2019), strided, first half: the previous l
                    slots, i - j < l (with l = W, one image row)
    strided_column  strided, second half: every l-th earlier slot, (i - j) mod l = 0 (the column)
    strided         both halves in one layer (their union: the paper's "merged head")
    fixed_block     Sparse Transformer, fixed, first half: the slots of its own block of l,
                    i // l = j // l
    fixed_summary   fixed, second half: the last c slots of every block of l, j mod l >= l - c
    fixed           both halves in one layer

A layer pattern is an ``AttentionPattern``; its mask is built once per (pattern, N) and kept per
device (``pattern_mask``), so a forward pass only looks it up. ``scaled_dot_product_attention``
computes every score and masks them; ``pattern_block_mask`` is the same mask as FlexAttention's
block-sparse ``BlockMask``, whose kernel skips the 128×128 tiles a pattern never reads. ``span`` is how far back a query
can reach: a step-by-step sampler keeps only the keys and values of the last ``span`` slots (or a
few more), in a ring (``ring_rows`` is the mask over that ring), which is all a local pattern can
still read.
``slot_field`` composes the layers' masks into what each slot sees through the whole stack.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask

# the ``attention`` of a prior -> the layer patterns it cycles over its layers by default
FAMILIES: dict[str, tuple[str, ...]] = {
    "full": ("full",),
    "local_1d": ("local_1d",),
    "local_2d": ("local_2d",),
    "strided": ("strided_row", "strided_column"),
    "fixed": ("fixed_block", "fixed_summary"),
}


def family_patterns(family: str) -> tuple[str, ...]:
    """The layer patterns a ``layout`` of ``family`` may name: its halves, their union, and full."""
    unions = (family,) if len(FAMILIES[family]) > 1 else ()
    return tuple(dict.fromkeys(FAMILIES[family] + unions + ("full",)))


@dataclass(frozen=True)
class AttentionPattern:
    """One layer's pattern (see the module docstring); the sizes that ``name`` does not use stay 0."""

    name: str
    block: int = 0  # local_1d: b, slots per query block; local_2d: r, rows per block
    block_cols: int = 0  # local_2d: c, columns per block
    stride: int = 0  # strided / fixed: l
    summary: int = 0  # fixed: c, the summary slots at the end of every block of l
    grid: tuple[int, int] = (0, 0)  # local_2d: the (H, W) of the grid whose positions the slots predict


def block_raster(H: int, W: int, rows: int, cols: int) -> torch.Tensor:
    """Blocks of rows×cols positions in raster order, raster inside a block -> long (H·W,) of flat
    positions h·W + w on the CPU; blocks at the bottom and right edges may be cut short."""
    p = torch.arange(H * W, device="cpu")
    h, w = p // W, p % W
    blocks_per_row = -(-W // cols)
    block = (h // rows) * blocks_per_row + w // cols
    return torch.argsort(block * rows * cols + (h % rows) * cols + w % cols)


def _rule(pattern: AttentionPattern, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """Whether query slot i may see key slot j by the pattern alone (causality comes on top):
    i (N, 1), j (1, N) long -> bool (N, N)."""
    name, stride = pattern.name, pattern.stride
    if name == "full":
        return torch.ones(len(i), j.shape[1], dtype=torch.bool)
    if name == "local_1d":
        return i // pattern.block - j // pattern.block <= 1
    if name == "local_2d":
        (H, W), r, c = pattern.grid, pattern.block, pattern.block_cols
        position = block_raster(H, W, r, c)  # slot -> the position it predicts
        y, x = position // W, position % W
        top, left = (y // r * r)[:, None], (x // c * c)[:, None]  # of each query's block
        return (y[None] >= top - r) & (x[None] >= left - c) & (x[None] < left + 2 * c)
    if name == "strided_row":
        return i - j < stride
    if name == "strided_column":
        return (i - j) % stride == 0
    if name == "fixed_block":
        return i // stride == j // stride
    if name == "fixed_summary":
        return j % stride >= stride - pattern.summary
    if name in ("strided", "fixed"):
        first, second = FAMILIES[name]
        return (_rule(AttentionPattern(**{**vars(pattern), "name": first}), i, j)
                | _rule(AttentionPattern(**{**vars(pattern), "name": second}), i, j))
    raise ValueError(f"unknown attention pattern {pattern.name!r}; known: "
                     f"{sorted({p for family in FAMILIES for p in family_patterns(family)})}")


@functools.lru_cache(maxsize=32)
def _cpu_mask(pattern: AttentionPattern, n: int) -> torch.Tensor:
    i, j = torch.arange(n, device="cpu")[:, None], torch.arange(n, device="cpu")[None]
    return (j <= i) & (_rule(pattern, i, j) | (j == i))  # the diagonal too: no query is left with no key


@functools.lru_cache(maxsize=32)
def pattern_mask(pattern: AttentionPattern, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The pattern over n slots -> bool (n, n) on ``device``, True where query i may attend to key j;
    built once per (pattern, n) and device."""
    return _cpu_mask(pattern, n).to(device)


@functools.lru_cache(maxsize=32)
def pattern_block_mask(pattern: AttentionPattern, n: int, device: torch.device | str = "cpu") -> BlockMask:
    """The pattern over n slots as FlexAttention's ``BlockMask`` on ``device`` (its tiles that the
    pattern never reads are skipped, the others masked by ``pattern_mask``); built once per
    (pattern, n) and device."""
    dense = pattern_mask(pattern, n, device)

    def allowed(batch, head, query, key):
        return dense[query, key]

    return create_block_mask(allowed, None, None, n, n, device=device)


@functools.lru_cache(maxsize=32)
def span(pattern: AttentionPattern, n: int) -> int:
    """How many of the latest slots a query can reach, itself included: max over i of i - (the
    earliest j it sees) + 1; a sampler's KV cache of this many slots holds every key it reads."""
    mask = _cpu_mask(pattern, n)
    return int((torch.arange(n) - mask.int().argmax(dim=1)).max()) + 1


@functools.lru_cache(maxsize=32)
def ring_rows(pattern: AttentionPattern, n: int, size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The pattern over a ring of R = ``size`` >= ``span`` key slots, slot j kept at j mod R -> bool
    (n, R) on ``device``: row i says which ring places query i reads (each holding the latest slot
    j <= i that lands there; places no slot has reached yet are False). A ring of span + a places
    may hold slots up to i + a when query i runs, written early: the row never reads them."""
    mask, R = _cpu_mask(pattern, n), size
    assert R >= span(pattern, n), "a ring smaller than the span loses keys the pattern reads"
    i, place = torch.arange(n)[:, None], torch.arange(R)[None]
    j = i - (i - place) % R  # (n, R): the slot at each place when query i runs
    return ((j >= 0) & mask.gather(1, j.clamp(min=0))).to(device)


def through(pattern: AttentionPattern, field: torch.Tensor) -> torch.Tensor:
    """What each slot reads after one more layer of ``pattern`` on top of ``field`` bool (n, n)
    (True where slot i's output reads slot j's input) -> bool (n, n)."""
    return (_cpu_mask(pattern, len(field)).float() @ field.float()) > 0


def reach_depth(cycle: list[AttentionPattern], n: int) -> int:
    """How many layers, ``cycle`` repeated, it takes until a deeper stack would see no more
    (``slot_field`` stops growing over a whole cycle): the depth at which a stack of these
    patterns shows all it ever can, reaching every earlier slot or leaving a blind spot."""
    field = torch.eye(n, dtype=torch.bool)
    depth, unchanged = 0, 0
    while unchanged < len(cycle):
        grown = through(cycle[depth % len(cycle)], field)
        unchanged = unchanged + 1 if torch.equal(grown, field) else 0
        field, depth = grown, depth + 1
    return depth - len(cycle)


def slot_field(patterns: list[AttentionPattern], n: int) -> torch.Tensor:
    """What each slot's output depends on through layers with these patterns (first layer first;
    each adds its attention to a residual stream) -> bool (n, n), True where slot i's output reads
    slot j's input. It stops early once every slot sees all the earlier ones."""
    field = torch.eye(n, dtype=torch.bool)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    for pattern in patterns:
        if torch.equal(field, causal):
            break
        field = through(pattern, field)
    return field

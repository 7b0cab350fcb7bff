"""A decoder-only Transformer over the raster sequence of the H·W positions (the Image
Transformer / Image GPT family; the GPT priors of VQGAN and LlamaGen over VQ codes).

Each position (h, w) is one element of a sequence of N = H·W: its C symbols enter as one
vector (a linear map of their C·E input floats), so the head couples the channels of a
pixel. The sequence is shifted by one, so that the slot of position i holds the symbols
of position i - 1 and, through inclusive causal attention (slot i attends to slots
j <= i), position i sees exactly the positions before it. Slot 0 holds a learned start
token, or the class embedding for class-conditional priors.

Sub-pixel tokens (``tokens = "subpixel"``, the Image and Sparse Transformers' layout): one
slot per (h, w, c), channels innermost, N = H·W·C; each channel's symbols have their own
embedding (``latentar.nn.levels.LevelTable`` for pixels, a projection of the input embedding
for codes) and a learned channel embedding joins the row + column embedding of the slot's
target. The prior is then channel-masked: the head models one symbol per slot, params in C
blocks. A slot is keyed position · T + channel (T = C, or 1 for pixel tokens).

Any order (``order_embedding = true``, σ-GPT / XLNet's query position): slot t holds the
symbols of order[t-1] plus the embedding of where they sit (``given_rows``, ``given_cols``),
and the row + column embedding of the position it predicts, order[t]; its output is the
params of order[t], scattered back to the grid. The prior is the uniform mixture of its
listed orders (``orders``, ``num_orders``), trained on one of them per batch, or on a fresh
random permutation per batch (``orders = "random"``, listed as raster's variants). With
sub-pixel tokens the slot order is the position order × the channels.

Distribution augmentation with the positions following the pixels (``permute_positions = true``,
openai/distribution_augmentation's default ``permute_embeddings``; needs ``order_embedding`` and a
prior built with spatial ``augmentations``): augmentation id a's grid y = augment(x, a) holds at
raster position q the position σ_a(q) of x (``orders.augmentation_orders``), and position q of y
takes the row + column embeddings of σ_a(q), so p(y | a) is the any-order Transformer generating
x in the order σ_a, told a by the start token: the 8 symmetric orders under rot90 × transpose.
Nothing is moved but the embedding tables: the network is causal in y's own orders as before (the
listed order is raster, and any order of y is σ_a after it), so training, scoring, sampling,
completion and the fast stepper need nothing else. "channels" (not a move of positions) is refused,
as are local_2d attention and the listed orders of ``orders``, which σ_a replaces.

Positions are learned row + column embeddings: the grid is fixed, so absolute
positions cost nothing at sampling time (a cached key never changes), and the sum keeps
the 2-D layout (the position above is one row embedding away, not W slots) at H + W
vectors instead of H·W.

Blocks are pre-LayerNorm (causal multi-head self-attention through
``scaled_dot_product_attention``, then a GELU MLP), with residual dropout; a
class-conditional prior also adds a learned per-class bias to the residual stream at
each block. A spatial context (the VQ-VAE-2 bottom prior's top codes) is embedded, run
through a small non-causal Transformer encoder (every context position sees the whole
map), upsampled (nearest) to the grid and added at every position: it is known in full,
so it may be used non-causally.

Image GPT's variant (Chen et al. 2020; the ``igpt_*`` presets) swaps three parts: an RMS norm
(``norm = "rms"``: no mean subtracted, no bias), the sigmoid GELU (``activation = "gelu2"``) and
an output head without bias that starts at zero (``zero_head``: every symbol equally likely at
initialisation). Its head is untied, as Image GPT's: the input side is a projection of the C
symbols' input floats, not a table of K token rows that a head could share.

Fast sampling (``TransformerStepper``) runs each block at the new slot only, its
attention over a KV cache of the earlier ones (``StepPass.self_attend``).

Attention patterns (``attention``, ``layout``; ``latentar.nn.attention_patterns``) restrict the
earlier slots each layer attends to: a boolean mask over the N slots (sub-pixels with sub-pixel
tokens, in the generation order) per layer, in the full pass and as the same row in a step, whose
KV cache is then a ring of the slots the pattern can still reach. Under ``local_2d`` the slots
follow block-raster order over the (H, W·T) grid of slots (tensor2tensor's layout for sub-pixels;
a block's columns a multiple of T, so a pixel's channels stay together): that order of the
positions is the prior's one order (``orders``), in which it samples, scores and completes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from latentar.checks import DEPTH, DEPTH_OR_NONE, FRACTION, Bound, Checked, FieldError
from latentar.nn.attention_patterns import FAMILIES, AttentionPattern, family_patterns, reach_depth, slot_field
from latentar.nn.caches import StepCache
from latentar.nn.conditioning import class_biases
from latentar.nn.levels import LevelTable
from latentar.nn.passes import FullPass, StepPass
from latentar.nn.transformer import ACTIVATIONS, KERNELS, NORMS, EncoderPass, TransformerBlock, init_weights, make_norm
from latentar.priors.base import Prior, register_prior
from latentar.priors.condition import Condition
from latentar.priors.engine import Stepper
from latentar.priors.orders import ORDER_NAMES, augmentation_orders, block_raster, named_orders
from latentar.priors.spec import PriorSpec

TOKENS = ("pixel", "subpixel")
ORDER_CHOICES = (*ORDER_NAMES, "random")  # "random": trained on fresh permutations, listed as raster's variants


@dataclass
class TransformerArch(Checked):
    label = "transformer"
    bounds = {"dropout": FRACTION, "context_layers": DEPTH_OR_NONE, "num_layers": DEPTH,
              "norm": tuple(NORMS), "activation": tuple(ACTIVATIONS), "attention": tuple(FAMILIES), "tokens": TOKENS,
              "kernel": KERNELS, "orders": ORDER_CHOICES, "num_orders": Bound(1, 8)}

    width: int = 256  # D: the residual stream's width
    num_layers: int = 8  # Transformer blocks
    heads: int = 8  # attention heads; width must be a multiple of it
    mlp_ratio: int = 4  # the MLP's hidden width, in multiples of D
    dropout: float = 0.0  # residual and embedding dropout (train mode only)
    context_layers: int = 1  # non-causal blocks of the context encoder (spatial context only);
    #                          0: each position sees only the context codes above it
    # Image GPT's variant (the igpt_* presets set all three)
    norm: str = "layernorm"  # "layernorm", or "rms": x·rsqrt(mean(x²) + ε)·g, no mean subtracted, no bias
    activation: str = "gelu"  # the MLP's: "gelu", or "gelu2": x·σ(1.702·x)
    zero_head: bool = False  # the output head without bias, zero at initialisation (uniform symbols)
    # attention patterns (``latentar.nn.attention_patterns``): the earlier slots each layer attends to
    attention: str = "full"  # full | local_1d | local_2d (generates in block-raster order) | strided | fixed
    block: int | tuple[int, int] | None = None  # local_1d: query block length in slots; local_2d: rows or
    #                                             [rows, cols] of the (H, W·T) slot grid (cols a multiple of T)
    stride: int | None = None  # strided, fixed: l, the local window and the stride in slots (one image row: W·T)
    summary: int | None = None  # fixed: c, the last c slots of every block of l, which later slots all see
    layout: str | None = None  # patterns cycled over the layers (the last cycle may stop part-way), e.g.
    #                           "strided_row,strided_column"; None: the attention's own cycle
    kernel: str = "sdpa"  # a pattern's whole passes: "sdpa" (dense, masked) or "flex" (FlexAttention, block-sparse,
    #                       compiled; on CUDA, and on the CPU without gradients; elsewhere sdpa); same weights
    # what a slot is, and the orders it is generated in
    tokens: str = "pixel"  # "pixel": a slot per position (the head couples its channels); "subpixel": per (h, w, c)
    order_embedding: bool = False  # any order: each slot also embeds the position it predicts (σ-GPT)
    orders: str = "raster"  # with order_embedding: the mixture's orders, variants of "raster" or "s_curve";
    #                         "random": trained on a fresh random permutation per batch, listed as "raster"
    num_orders: int = 8  # with order_embedding: how many variants (8 on a square grid, 4 otherwise) it mixes
    permute_positions: bool = False  # distribution augmentation: the position embeddings follow the pixels, so
    #                                  augmentation id a generates the unaugmented grid in its order σ_a (needs
    #                                  order_embedding; σ_a replaces the listed orders, num_orders unused)

    def __post_init__(self):
        super().__post_init__()
        if self.width % self.heads:
            raise FieldError(f"transformer.width ({self.width}) must be a multiple of "
                             f"transformer.heads ({self.heads})")
        if self.permute_positions:
            check_permute_positions(self)
        if self.orders != "raster" and not self.order_embedding:
            raise FieldError(f"transformer.orders = {self.orders!r} needs transformer.order_embedding = true "
                             f"(without it the Transformer generates in raster order only)")
        if self.order_embedding and self.attention == "local_2d":
            raise FieldError("transformer.order_embedding = true cannot go with attention = 'local_2d': local 2-D "
                             "attention fixes its own order (block-raster); local_1d, strided and fixed apply "
                             "in any order")
        check_pattern_fields(self)

    @property
    def pattern_cycle(self) -> tuple[str, ...]:
        """The layer patterns the layers cycle through (``layout``, or the attention's default)."""
        return FAMILIES[self.attention] if self.layout is None else layout_names(self.layout)

    @property
    def layer_patterns(self) -> tuple[str, ...]:
        """The pattern of each layer's attention (``pattern_cycle`` cycled over the layers)."""
        cycle = self.pattern_cycle
        return tuple(cycle[i % len(cycle)] for i in range(self.num_layers))


def check_permute_positions(arch: TransformerArch) -> None:
    """The fields that ``permute_positions`` needs or replaces."""
    if arch.attention == "local_2d":
        raise FieldError("transformer.permute_positions = true cannot go with attention = 'local_2d': local 2-D "
                         "attention fixes its own order (block-raster), and the augmentations' orders are others")
    if not arch.order_embedding:
        raise FieldError("transformer.permute_positions = true needs transformer.order_embedding = true: each slot "
                         "embeds the position it predicts, which the augmentation moves")
    if arch.orders != "raster":
        raise FieldError(f"transformer.orders = {arch.orders!r} cannot go with permute_positions = true: the "
                         f"augmentation id's order σ_a replaces the listed orders (leave orders = 'raster')")


def check_pattern_fields(arch: TransformerArch) -> None:
    """The attention fields together: each size the pattern needs given, and only those."""
    attention, needs = arch.attention, PATTERN_SIZES[arch.attention]
    for name in ("block", "stride", "summary"):
        value = getattr(arch, name)
        if name in needs and value is None:
            raise FieldError(f"transformer.{name} is required with attention = {attention!r}")
        if name not in needs and value is not None:
            raise FieldError(f"transformer.{name} is not used with attention = {attention!r} "
                             f"(it sizes {', '.join(a for a, sizes in PATTERN_SIZES.items() if name in sizes)})")
    if attention == "local_1d" and not isinstance(arch.block, int):
        raise FieldError(f"transformer.block must be one integer (the query block length in slots) with "
                         f"attention = 'local_1d', got {list(arch.block or ())}")
    if attention == "fixed" and arch.summary is not None and arch.stride is not None and arch.summary > arch.stride:
        raise FieldError(f"transformer.summary ({arch.summary}) must be at most transformer.stride ({arch.stride}): "
                         f"the summary is the last slots of every block of stride")
    if arch.layout is not None:
        names, allowed = layout_names(arch.layout), family_patterns(attention)
        unknown = [name for name in names if name not in allowed]
        if unknown:
            raise FieldError(f"transformer.layout names {unknown}, not patterns of attention = {attention!r}; "
                             f"it takes a comma-separated cycle of {list(allowed)}")


def layout_names(layout: str) -> tuple[str, ...]:
    """"strided_row, strided_column" -> ("strided_row", "strided_column")."""
    return tuple(name.strip() for name in layout.split(","))


PATTERN_SIZES = {"full": (), "local_1d": ("block",), "local_2d": ("block",), "strided": ("stride",),
                 "fixed": ("stride", "summary")}  # the sizes each attention takes


def block_size(arch: TransformerArch) -> tuple[int, int]:
    """The (rows, cols) of a local_2d query block: ``block`` as a pair, or an int for a square."""
    return (arch.block, arch.block) if isinstance(arch.block, int) else arch.block or (1, 1)


def layer_pattern(name: str, arch: TransformerArch, grid: tuple[int, int]) -> AttentionPattern:
    """The pattern ``name`` of one layer, sized by the arch, over the slots of an (H, W·T) grid."""
    if name == "local_2d":
        rows, cols = block_size(arch)
        return AttentionPattern(name, block=rows, block_cols=cols, grid=grid)
    return AttentionPattern(name, block=arch.block if isinstance(arch.block, int) else 0,
                            stride=arch.stride or 0, summary=arch.summary or 0)


def block(arch: TransformerArch) -> TransformerBlock:
    """One Transformer block of ``arch``."""
    return TransformerBlock(arch.width, arch.heads, arch.mlp_ratio, arch.dropout, norm=arch.norm,
                            activation=arch.activation)


def grid_positions(rows: nn.Embedding, cols: nn.Embedding) -> torch.Tensor:
    """Learned row (H, D) + column (W, D) embeddings -> (H·W, D) in raster order."""
    return rearrange(rows.weight[:, None] + cols.weight[None], "h w d -> (h w) d")


def permuted_positions(spec: PriorSpec) -> torch.Tensor:
    """σ_a of every augmentation id of ``spec`` (``orders.augmentation_orders``) -> long
    (num_augmentations, H·W); a clear error where ``permute_positions`` cannot apply."""
    _, H, W = spec.shape
    if not spec.augmentations:
        raise FieldError("transformer.permute_positions = true needs a prior built with augmentations (e.g. "
                         "augmentations=('rot90', 'transpose'), train-prior --augment): the positions follow them")
    if "channels" in spec.augmentations:
        raise FieldError("transformer.permute_positions = true cannot go with the augmentation 'channels': it "
                         "permutes channels, not positions; leave it out, or train it without permute_positions")
    return augmentation_orders(spec.augmentations, H, W)


def permuted(table: torch.Tensor, moves: torch.Tensor | None) -> torch.Tensor:
    """A table of the positions (H·W, D) -> (1, H·W, D); with ``moves`` long (B, H·W), grid b's row q
    is row moves[b, q] of it -> (B, H·W, D)."""
    return table[None] if moves is None else table[moves]


class ContextEncoder(nn.Module):
    """Context codes long (B, h, w) -> (B, H·W, D) for a grid of (H, W): embedded, with
    their own row + column positions, through non-causal blocks, upsampled (nearest)."""

    def __init__(self, symbols: int, shape: tuple[int, int], arch: TransformerArch):
        super().__init__()
        self.embed = nn.Embedding(symbols, arch.width)
        self.rows, self.cols = nn.Embedding(shape[0], arch.width), nn.Embedding(shape[1], arch.width)
        self.blocks = nn.ModuleList(block(arch) for _ in range(arch.context_layers))
        self.norm = make_norm(arch.norm, arch.width)

    def forward(self, context: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h, w = context.shape[1:]
        c = self.embed(context.flatten(1)) + grid_positions(self.rows, self.cols)  # (B, h·w, D)
        for block in self.blocks:
            c = block(EncoderPass, c)
        c = rearrange(self.norm(c), "b (h w) d -> b d h w", h=h, w=w)
        return rearrange(F.interpolate(c, size=size, mode="nearest"), "b d h w -> b (h w) d")  # (B, H·W, D)


class TransformerStepper(Stepper):
    """``params(h, w, c)`` runs ``Transformer.body`` on one slot at a time: slot t = s·T + k
    of the s-th position walked (k its token channel, T the tokens per position) holds what the
    slot before it predicted, final by then, plus its own terms (``slot_terms``); each block's
    key and value of slot t enter the ``StepCache`` (its slots in one column, so
    ``StepPass(cache, t, 0)`` is slot t), and its query attends to slots <= t there (through
    its pattern, if any: then the cache is a ring of the slots the pattern can still reach).

    Sub-pixel tokens: asked for channel c, it runs slot c of the position alone, whose input
    (channel c - 1, or the previous position's last) is final by then, so each slot runs once
    and its key and value enter the cache once. Channel c's block of the params is fresh; the
    other channels' blocks are those their slots last gave (the driver reads channel c's
    only). Grids may each have their own order (h, w long (n,)): every grid is at its own
    s-th position, so the slots line up."""

    prior: Transformer

    def __init__(self, prior: Transformer, x: torch.Tensor, cond: Condition, order: torch.Tensor | None):
        super().__init__(prior, x, cond, order)
        n = x.shape[0]
        self.cache = StepCache(n, [(prior.num_slots, 1)])
        self.start = prior.start_token(cond.labels, n, cond.augment)  # (n, 1, D)
        self.terms = prior.position_terms(cond)  # (1 or n, H·W, D) each, computed once
        self.biases = prior.class_bias(cond.labels)
        self.rows = torch.arange(n, device=x.device)
        self.walked = 0  # positions taken so far: the next one is the walked-th of every grid's order
        self.previous: torch.Tensor | None = None  # long (n,): each grid's last position taken
        self.blocks: list[torch.Tensor | None] = [None] * prior.tokens_per_position  # each slot's last params

    def params(self, h: int | torch.Tensor, w: int | torch.Tensor, c: int | None) -> torch.Tensor:
        W = self.x.shape[-1]
        p = torch.as_tensor(h * W + w, device=self.x.device).expand(len(self.x))  # (n,)
        k = c or 0
        fresh = self.blocks[k] = self.slot(p, k)  # (n, P / T)
        return torch.cat([fresh if block is None else block for block in self.blocks], dim=1)  # (n, P)

    def slot(self, p: torch.Tensor, k: int) -> torch.Tensor:
        """The head params (n, P / T) of token channel k at the positions p long (n,)."""
        T = self.prior.tokens_per_position
        target = p * T + k  # (n,) keys: position · T + channel
        if k:
            given = target - 1
        elif self.previous is not None:
            given = self.previous * T + T - 1
        else:
            given = torch.full_like(p, -1)  # the start token
        held = self.start[:, 0] if self.previous is None and not k else self.symbols(given)  # (n, D)
        inputs = held[:, None] + self.prior.slot_terms(self.terms, given[:, None], target[:, None])  # (n, 1, D)
        t = self.walked * T + k
        return self.prior.body(StepPass(self.cache, t, 0), inputs, self.biases)[:, 0]

    def symbols(self, keys: torch.Tensor) -> torch.Tensor:
        """The vectors (n, D) of the symbols at the keys long (n,) (position · T + channel)."""
        T, W = self.prior.tokens_per_position, self.x.shape[-1]
        h, w = (keys // T).div(W, rounding_mode="floor"), (keys // T).remainder(W)
        z = self.prior.input(self.x[self.rows, :, h, w][:, :, None, None])  # (n, C·E, 1, 1)
        return self.prior.embed_symbols(z)[self.rows, keys % T]  # (n, D)

    def take(self, h: int | torch.Tensor, w: int | torch.Tensor) -> None:
        W = self.x.shape[-1]
        self.previous = torch.as_tensor(h * W + w, device=self.x.device).expand(len(self.x))
        self.walked += 1


@register_prior("transformer")
class Transformer(Prior):
    Arch = TransformerArch
    presets = {
        "tiny": dict(width=8, num_layers=2, heads=2, mlp_ratio=2),
        # 7×7 / 8×8 code grids on a CPU: a few minutes of training
        "small": dict(width=96, num_layers=4, heads=4),
        "default": {},
        # VQGAN's class-conditional ImageNet prior (Esser et al. 2021): 48 blocks of width 1536,
        # 24 heads; 1.46B parameters here with 1000 classes over 16×16 codes of K = 16384
        "paper": dict(width=1536, num_layers=48, heads=24),
        # Image GPT (Chen et al. 2020) iGPT-S, -M, -L; over 32×32 palette tokens of K = 512 (C = 1):
        # 76.0M, 454M, 1.36B parameters here (the paper: 76M, 455M, 1.4B)
        **{name: dict(width=width, num_layers=layers, heads=heads, norm="rms", activation="gelu2", zero_head=True)
           for name, width, layers, heads in (("igpt_s", 512, 24, 8), ("igpt_m", 1024, 36, 8),
                                              ("igpt_l", 1536, 48, 16))},
        # Image Transformer on CIFAR-10 (Parmar et al. 2018): 12 layers of width 512, 4 heads, sub-pixel
        # tokens, local 1-D attention over query blocks of 256 sub-pixels
        "image_transformer_cifar": dict(width=512, num_layers=12, heads=4, tokens="subpixel", attention="local_1d",
                                        block=256),
        # Sparse Transformer on CIFAR-10 (Child et al. 2019; openai/distribution_augmentation hyperparams.py,
        # "c10-58m" = c10_sparse over c10_dense): 128 layers of width 256, 2 heads, MLP ×2, residual dropout
        # 0.25, strided l = 96 (one row of 32×3 sub-pixels) with the layers cycling "bT,b,b,b": one layer over
        # every l-th slot, then three over the previous l (its keys at half width, qk_ratio 0.5, are not modelled)
        "sparse_transformer_cifar": dict(width=256, num_layers=128, heads=2, mlp_ratio=2, dropout=0.25,
                                         tokens="subpixel", attention="strided", stride=96,
                                         layout="strided_column,strided_row,strided_row,strided_row"),
    }
    supports_context = True
    checkpointable = True
    Stepper = TransformerStepper

    order_table: torch.Tensor | None  # (n, H·W) long, a buffer: ``orders`` of an any-order prior
    augment_orders: torch.Tensor | None  # (num_augmentations, H·W) long, a buffer: σ_a under permute_positions

    @classmethod
    def masks_channels(cls, arch: TransformerArch) -> bool:
        return arch.tokens == "subpixel"  # a slot per channel: channel c's params read channels < c

    def __init__(self, spec: PriorSpec, arch: TransformerArch):
        super().__init__(spec, arch)
        C, H, W = spec.shape
        D = arch.width
        self.any_order = arch.order_embedding
        self.tokens_per_position = C if self.channel_masked else 1  # T
        self.num_slots = H * W * self.tokens_per_position  # N
        self.symbol_projection: nn.Module | None = None
        self.levels = self.channel_embedding = self.given_rows = self.given_cols = None
        if not self.channel_masked:
            self.symbol_projection = nn.Linear(C * self.input.dim, D)  # the C symbols of a position -> one vector
        elif spec.symbols == "pixels":
            self.levels = LevelTable(C, spec.num_symbols, D)  # K learned vectors per channel
        else:
            self.symbol_projection = nn.Linear(self.input.dim, D)  # one code's input embedding -> D
        if self.channel_masked:
            self.channel_embedding = nn.Embedding(C, D)  # added to the row + column of the slot's target
        self.rows, self.cols = nn.Embedding(H, D), nn.Embedding(W, D)
        if arch.order_embedding:  # where the symbols a slot holds sit (its target's rows and cols are above)
            self.given_rows, self.given_cols = nn.Embedding(H, D), nn.Embedding(W, D)
        table = moves = None
        with torch.device("cpu"):  # also when the model is built on the meta device (``saving.meta_model``)
            if arch.permute_positions:
                moves = permuted_positions(spec)
            elif arch.order_embedding:
                table = named_orders("raster" if arch.orders == "random" else arch.orders, arch.num_orders, H, W)
        self.register_buffer("order_table", table, persistent=False)
        self.register_buffer("augment_orders", moves, persistent=False)
        # slot 0: a learned start token, or the class embedding (every parameter is used, as DDP needs)
        self.start = nn.Parameter(torch.zeros(1, 1, D)) if spec.label_rows is None else None
        self.class_embedding = None if spec.label_rows is None else nn.Embedding(spec.label_rows, D)
        self.augment_embedding = class_biases(None, [D], spec.augment_sizes)  # + one row per augmentation value
        self.context = None
        if spec.context_shape is not None:
            assert spec.context_symbols is not None  # given together (``PriorSpec``)
            self.context = ContextEncoder(spec.context_symbols, spec.context_shape, arch)
        self.dropout = nn.Dropout(arch.dropout)
        self.blocks = nn.ModuleList(block(arch) for _ in range(arch.num_layers))
        T = self.tokens_per_position
        if arch.attention == "local_2d" and block_size(arch)[1] % T:
            raise FieldError(f"transformer.block's columns ({block_size(arch)[1]}) must be a multiple of the "
                             f"{T} channels with tokens = 'subpixel': local_2d cuts the (H, W·{T}) grid of "
                             f"sub-pixels, and a block keeps each pixel's channels together")
        self.patterns = [layer_pattern(name, arch, (H, W * T)) for name in arch.layer_patterns]
        for layer, pattern in zip(self.blocks, self.patterns):
            cast(TransformerBlock, layer).attention.pattern = None if pattern.name == "full" else pattern
        self.set_attention_kernel(arch.kernel)
        self.norm = make_norm(arch.norm, D)
        self.out = nn.Linear(D, self.head.num_params // T, bias=not arch.zero_head)  # one slot's params
        transformer_parts = [self.symbol_projection, self.levels, self.channel_embedding, self.rows, self.cols,
                             self.given_rows, self.given_cols, self.class_embedding, self.context, self.blocks,
                             self.norm, self.out]
        for part in filter(None, transformer_parts):
            init_weights(part, arch.num_layers + arch.context_layers)
        if self.start is not None:
            nn.init.normal_(self.start, std=0.02)
        if arch.zero_head:
            nn.init.zeros_(self.out.weight)
        # a (D) residual bias per block, zero at first (see ``ClassBiases``)
        self.class_bias = class_biases(spec.label_rows, [D] * arch.num_layers)

    # ---- the attention patterns and the orders it generates in ---------------------------
    @property
    def full_context(self) -> bool:  # type: ignore[override]  # a class attribute of most priors
        """Whether every slot sees every earlier one through the layers' patterns together."""
        if all(pattern.name == "full" for pattern in self.patterns):
            return True
        N = self.num_slots
        return bool(slot_field(self.patterns, N).equal(torch.ones(N, N, dtype=torch.bool).tril()))

    def set_attention_kernel(self, kernel: str) -> None:
        """Run the patterned layers' whole passes through ``kernel`` ("sdpa" or "flex"; see
        ``TransformerArch.kernel``): the same numbers, so a loaded prior may switch; saved with it."""
        self.arch = replace(self.arch, kernel=kernel)  # validated there
        for layer in self.blocks:
            cast(TransformerBlock, layer).attention.kernel = kernel

    def reach_depth(self) -> int:
        """The layers past which a deeper copy sees no more slots (``attention_patterns.reach_depth``
        of the pattern cycle): a small local window needs about N / block of them."""
        _, H, W = self.spec.shape
        cycle = [layer_pattern(name, self.arch, (H, W * self.tokens_per_position)) for name in self.arch.pattern_cycle]
        return reach_depth(cycle, self.num_slots)

    @property
    def slot_order(self) -> torch.Tensor | None:
        """The position order of the slots under local_2d attention, long (H·W,) on the CPU: blocks
        of the (H, W·T) slot grid in raster order, raster inside, so blocks of rows × cols / T
        positions; None for the other attentions."""
        if self.arch.attention != "local_2d":
            return None
        _, H, W = self.spec.shape
        rows, cols = block_size(self.arch)
        return block_raster(H, W, rows, cols // self.tokens_per_position)

    @property
    def orders(self) -> torch.Tensor:
        """The listed orders (n, H·W) with ``order_embedding`` (``arch.num_orders`` symmetric
        variants of ``arch.orders``); block-raster alone under local_2d; else raster alone."""
        if self.order_table is not None:
            return self.order_table
        order = self.slot_order
        return super().orders if order is None else order[None].to(self.device)

    def own_order(self, device: torch.device) -> torch.Tensor | None:
        """The order of a pass given none -> (H·W,), or None for raster without an order
        embedding: in training, a listed order drawn uniformly for the batch (or with ``orders =
        "random"`` a fresh uniform permutation); in evaluation, the first listed order; under
        local_2d, block-raster order."""
        if self.order_table is None:
            return self.slot_order
        if self.training and self.arch.orders == "random":
            return torch.randperm(self.order_table.shape[1], device=device)
        if self.training and len(self.order_table) > 1:
            return self.order_table[int(torch.randint(len(self.order_table), ()))]
        return self.order_table[0]

    # ---- the pieces a stepper shares -----------------------------------------------------
    def embed_symbols(self, z: torch.Tensor) -> torch.Tensor:
        """Input floats z (B, C·E, H, W) -> the vector of each token (B, H·W·T, D), keyed
        position · T + channel: a position's C symbols as one vector (pixel tokens), or each
        symbol alone (sub-pixel: a table of K vectors per channel for pixels, a projection of
        the code's input embedding for codes)."""
        if self.levels is not None:
            return rearrange(self.levels(rearrange(z, "b c h w -> b (h w) c")), "b p c d -> b (p c) d")
        assert self.symbol_projection is not None  # pixel tokens, or sub-pixel codes
        pattern = "b (c e) h w -> b (h w c) e" if self.channel_masked else "b (c e) h w -> b (h w) (c e)"
        return self.symbol_projection(rearrange(z, pattern, c=self.spec.shape[0]))

    def start_token(self, labels: torch.Tensor | None, batch: int, augment: torch.Tensor | None = None) -> torch.Tensor:
        """What slot 0 holds -> (B, 1, D): the class embedding, or the learned start token; plus the
        sum of the augmentation types' embeddings of ``augment`` (long (B,)) under augmentations."""
        if self.class_embedding is None:
            assert self.start is not None  # an unconditional prior has a start token
            start = self.start.expand(batch, -1, -1)
        else:
            start = self.class_embedding(labels)[:, None]
        (augmentation,) = self.augment_embedding(None, augment)  # (B, D) or None
        return start if augmentation is None else start + augmentation[:, None]


    def position_terms(self, cond: Condition) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What every position adds to the slots that predict it and, with ``order_embedding``, to
        the slot that holds its symbols -> (1 or B, H·W, D) each (the second None without it): its
        row + column embeddings (the predicted and the given ones), plus the encoded context at
        its position. Under ``permute_positions`` grid b's position q takes the embeddings of
        σ_a(q), a = cond.augment[b]: the position of the unaugmented grid whose symbols q holds."""
        _, H, W = self.spec.shape
        moves = None  # (B, H·W): σ of each grid's id; none given is the identity, σ_0 = raster
        if self.augment_orders is not None and cond.augment is not None:
            moves = self.augment_orders[cond.augment]
        terms = permuted(grid_positions(self.rows, self.cols), moves)  # (1 or B, H·W, D)
        held = None
        if self.given_rows is not None and self.given_cols is not None:
            held = permuted(grid_positions(self.given_rows, self.given_cols), moves)
        return terms if self.context is None else terms + self.context(cond.context, (H, W)), held

    def slot_terms(self, terms: tuple[torch.Tensor, torch.Tensor | None], given: torch.Tensor,
                   target: torch.Tensor) -> torch.Tensor:
        """What slots add to the symbols they hold -> (B', S, D): of ``terms`` (``position_terms``),
        the first at the position each slot predicts and the second (with ``order_embedding``) at
        the position whose symbol it holds, and its channel's embedding (sub-pixel tokens).
        given, target long (1 or B, S): the keys (position · T + channel) of the symbol each slot
        holds (-1: the start token) and of the one it predicts."""
        T = self.tokens_per_position
        predicted, held = terms
        batch = max(len(predicted), len(target), 0 if held is None else len(held))
        at = (target // T)[..., None].expand(batch, -1, predicted.shape[-1])  # (B', S, D)
        out = predicted.expand(batch, -1, -1).gather(1, at)
        if self.channel_embedding is not None:
            out = out + self.channel_embedding(target % T)
        if held is not None:
            at = (given.clamp(min=0) // T)[..., None].expand(batch, -1, held.shape[-1])  # (B', S, D)
            out = out + held.expand(batch, -1, -1).gather(1, at) * (given >= 0)[..., None]
        return out

    def slot_keys(self, order: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        """The keys (position · T + channel) of the N slots in generation order -> long (N,):
        ``order`` (H·W,) (None: raster), each position's T tokens in channel order."""
        T = self.tokens_per_position
        if order is None:
            return torch.arange(self.num_slots, device=device)
        return (order.to(device)[:, None] * T + torch.arange(T, device=device)).flatten()

    # ---- the network ---------------------------------------------------------------------
    def network(self, z, cond, order=None):
        """z (B, C·E, H, W) -> params (B, P, H, W): the slots in ``order`` (H·W,) (None: raster,
        block-raster under local_2d, or with ``order_embedding`` the first listed order, in
        training a drawn one: ``own_order``), causal in it, their params scattered back to their positions."""
        B, _, H, W = z.shape
        keys = self.slot_keys(self.own_order(z.device) if order is None else order, z.device)  # (N,)
        given = F.pad(keys[:-1], (1, 0), value=-1)  # (N,): slot t holds the symbol of slot t - 1
        start = self.start_token(cond.labels, B, cond.augment)
        held = torch.cat([start, self.embed_symbols(z)[:, keys[:-1]]], dim=1)  # (B, N, D)
        slots = held + self.slot_terms(self.position_terms(cond), given[None], keys[None])
        params = self.body(FullPass(), slots, self.class_bias(cond.labels))  # (B, N, P / T)
        params = torch.empty_like(params).index_copy_(1, keys, params)  # slot order -> key order
        return rearrange(params, "b (h w t) p -> b (t p) h w", h=H, w=W)

    def body(self, run, slots: torch.Tensor, biases: list[torch.Tensor | None]) -> torch.Tensor:
        """Slot inputs (B, N, D) -> head params (B, N, P / T); N = 1 in a slot pass."""
        x = self.dropout(slots)
        for block, bias in zip(self.blocks, biases):
            x = self.checkpointed(block, run, x, bias)
        return self.out(self.norm(x))

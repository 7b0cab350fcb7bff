"""A decoder-only Transformer over the raster sequence of the H·W positions (the Image
Transformer / Image GPT family; the GPT priors of VQGAN and LlamaGen over VQ codes).

Each position (h, w) is one element of a sequence of N = H·W: its C symbols enter as one
vector (a linear map of their C·E input floats), so the head couples the channels of a
pixel. The sequence is shifted by one, so that the slot of position i holds the symbols
of position i - 1 and, through inclusive causal attention (slot i attends to slots
j <= i), position i sees exactly the positions before it. Slot 0 holds a learned start
token, or the class embedding for class-conditional priors.

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

Fast sampling (``TransformerStepper``) runs each block at the new position only, its
attention over a KV cache of the earlier ones (``StepPass.self_attend``).

Attention patterns (``attention``, ``layout``; ``latentar.nn.attention_patterns``) restrict the
earlier slots each layer attends to: a boolean mask over slots per layer, in the full pass and as
the same row in a step, whose KV cache is then a ring of the slots the pattern can still reach.
Under ``local_2d`` the slots follow block-raster order: slot i predicts position order[i], holding
the symbols of order[i - 1] plus the position terms of order[i], and that order is the prior's one
order (``orders``), in which it samples, scores and completes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from latentar.checks import DEPTH, DEPTH_OR_NONE, FRACTION, Checked, FieldError
from latentar.nn.attention_patterns import FAMILIES, AttentionPattern, family_patterns, slot_field
from latentar.nn.caches import StepCache
from latentar.nn.conditioning import class_biases
from latentar.nn.passes import FullPass, StepPass
from latentar.nn.transformer import ACTIVATIONS, NORMS, EncoderPass, TransformerBlock, init_weights, make_norm
from latentar.priors.base import Prior, register_prior
from latentar.priors.condition import Condition
from latentar.priors.engine import Stepper
from latentar.priors.orders import block_raster, ranks
from latentar.priors.spec import PriorSpec


@dataclass
class TransformerArch(Checked):
    label = "transformer"
    bounds = {"dropout": FRACTION, "context_layers": DEPTH_OR_NONE, "num_layers": DEPTH,
              "norm": tuple(NORMS), "activation": tuple(ACTIVATIONS), "attention": tuple(FAMILIES)}

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
    block: int | tuple[int, int] | None = None  # local_1d: query block length in slots; local_2d: rows or [rows, cols]
    stride: int | None = None  # strided, fixed: l, the local window and the stride (one image row: l = W)
    summary: int | None = None  # fixed: c, the last c slots of every block of l, which later slots all see
    layout: str | None = None  # patterns cycled over the layers (the last cycle may stop part-way), e.g.
    #                           "strided_row,strided_column"; None: the attention's own cycle

    def __post_init__(self):
        super().__post_init__()
        if self.width % self.heads:
            raise FieldError(f"transformer.width ({self.width}) must be a multiple of "
                             f"transformer.heads ({self.heads})")
        check_pattern_fields(self)

    @property
    def layer_patterns(self) -> tuple[str, ...]:
        """The pattern of each layer's attention (``layout`` cycled, or the attention's default)."""
        cycle = FAMILIES[self.attention] if self.layout is None else layout_names(self.layout)
        return tuple(cycle[i % len(cycle)] for i in range(self.num_layers))


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
    """The pattern ``name`` of one layer, sized by the arch, over the slots of an (H, W) grid."""
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
    """``params(h, w, None)`` runs ``Transformer.body`` on the slot i that predicts position
    p = h·W + w (i = p in raster order) alone: its input is the start token (i = 0) or the
    symbols of the position slot i - 1 predicts, final by then, plus the position terms of p;
    each block's key and value of slot i enter the ``StepCache`` (at i = row·W + col of the
    ``StepPass``), and its query attends to slots <= i there (through its pattern, if any)."""

    prior: Transformer

    def __init__(self, prior: Transformer, x: torch.Tensor, cond: Condition, order: torch.Tensor | None):
        super().__init__(prior, x, cond, order)
        self.cache = StepCache(x.shape[0], [(x.shape[-2], x.shape[-1])])
        self.start = prior.start_token(cond.labels, x.shape[0], cond.augment)  # (n, 1, D)
        self.terms = prior.position_terms(cond.context)  # (1 or n, H·W, D), computed once
        self.biases = prior.class_bias(cond.labels)
        slot_order = prior.slot_order
        self.positions = None if slot_order is None else slot_order.tolist()  # slot -> position
        self.slots = None if slot_order is None else ranks(slot_order).tolist()  # position -> slot

    def params(self, h: int, w: int, c: int | None) -> torch.Tensor:
        W = self.x.shape[-1]
        p = h * W + w
        i = p if self.slots is None else self.slots[p]
        if i == 0:
            slot = self.start
        else:
            ph, pw = divmod(i - 1 if self.positions is None else self.positions[i - 1], W)
            slot = self.prior.embed_symbols(self.prior.input(self.x[:, :, ph:ph + 1, pw:pw + 1]))  # (n, 1, D)
        slot = slot + self.terms[:, p:p + 1]
        return self.prior.body(StepPass(self.cache, *divmod(i, W)), slot, self.biases)[:, 0]  # (n, P)


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
        # Image Transformer on CIFAR-10 (Parmar et al. 2018): 12 layers of width 512, 4 heads, local 1-D
        # attention over query blocks of 256
        "image_transformer_cifar": dict(width=512, num_layers=12, heads=4, attention="local_1d", block=256),
        # Sparse Transformer on CIFAR-10 (Child et al. 2019; openai/distribution_augmentation hyperparams.py,
        # "c10-58m" = c10_sparse over c10_dense): 128 layers of width 256, 2 heads, MLP ×2, residual dropout
        # 0.25, strided l = 96 (one row of 32×3 sub-pixels) with the layers cycling "bT,b,b,b": one layer over
        # every l-th slot, then three over the previous l (its keys at half width, qk_ratio 0.5, are not modelled)
        "sparse_transformer_cifar": dict(width=256, num_layers=128, heads=2, mlp_ratio=2, dropout=0.25,
                                         attention="strided", stride=96,
                                         layout="strided_column,strided_row,strided_row,strided_row"),
    }
    supports_context = True
    checkpointable = True
    Stepper = TransformerStepper

    def __init__(self, spec: PriorSpec, arch: TransformerArch):
        super().__init__(spec, arch)
        C, H, W = spec.shape
        D = arch.width
        self.symbol_projection = nn.Linear(C * self.input.dim, D)  # the C symbols of a position -> one vector
        self.rows, self.cols = nn.Embedding(H, D), nn.Embedding(W, D)
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
        self.patterns = [layer_pattern(name, arch, (H, W)) for name in arch.layer_patterns]
        for layer, pattern in zip(self.blocks, self.patterns):
            cast(TransformerBlock, layer).attention.pattern = None if pattern.name == "full" else pattern
        self.norm = make_norm(arch.norm, D)
        self.out = nn.Linear(D, self.head.num_params, bias=not arch.zero_head)
        transformer_parts = [self.symbol_projection, self.rows, self.cols, self.class_embedding, self.context,
                             self.blocks, self.norm, self.out]
        for part in filter(None, transformer_parts):
            init_weights(part, arch.num_layers + arch.context_layers)
        if self.start is not None:
            nn.init.normal_(self.start, std=0.02)
        if arch.zero_head:
            nn.init.zeros_(self.out.weight)
        # a (D) residual bias per block, zero at first (see ``ClassBiases``)
        self.class_bias = class_biases(spec.label_rows, [D] * arch.num_layers)

    # ---- the attention patterns and the order they generate in ---------------------------
    @property
    def full_context(self) -> bool:  # type: ignore[override]  # a class attribute of most priors
        """Whether every position sees every earlier one through the layers' patterns together."""
        if all(pattern.name == "full" for pattern in self.patterns):
            return True
        _, H, W = self.spec.shape
        return bool(slot_field(self.patterns, H * W).equal(torch.ones(H * W, H * W, dtype=torch.bool).tril()))

    @property
    def slot_order(self) -> torch.Tensor | None:
        """The position each slot predicts, long (H·W,) on the CPU: block-raster order for local_2d
        attention; None for raster order (slot i predicts position i)."""
        if self.arch.attention != "local_2d":
            return None
        _, H, W = self.spec.shape
        rows, cols = block_size(self.arch)
        return block_raster(H, W, rows, cols)

    @property
    def orders(self) -> torch.Tensor:
        order = self.slot_order
        return super().orders if order is None else order[None].to(self.device)

    # ---- the pieces a stepper shares -----------------------------------------------------
    def embed_symbols(self, z: torch.Tensor) -> torch.Tensor:
        """Input floats z (B, C·E, H, W) -> one vector per position (B, H·W, D)."""
        return self.symbol_projection(rearrange(z, "b ce h w -> b (h w) ce"))

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

    def position_terms(self, context: torch.Tensor | None) -> torch.Tensor:
        """What every slot adds to its input -> (1 or B, H·W, D): its row + column embedding,
        plus the encoded context at its position."""
        _, H, W = self.spec.shape
        terms = grid_positions(self.rows, self.cols)[None]  # (1, H·W, D)
        return terms if self.context is None else terms + self.context(context, (H, W))

    # ---- the network ---------------------------------------------------------------------
    def network(self, z, cond):
        B, _, H, W = z.shape
        symbols, terms, order = self.embed_symbols(z), self.position_terms(cond.context), self.slot_order
        if order is not None:  # slot i predicts position order[i]
            symbols, terms = symbols[:, order.to(z.device)], terms[:, order.to(z.device)]
        shifted = torch.cat([self.start_token(cond.labels, B, cond.augment), symbols[:, :-1]], dim=1)  # (B, N, D)
        params = self.body(FullPass(), shifted + terms, self.class_bias(cond.labels))  # (B, N, P) by slot
        if order is not None:
            params = params[:, ranks(order).to(z.device)]  # by position
        return rearrange(params, "b (h w) p -> b p h w", h=H, w=W)

    def body(self, run, slots: torch.Tensor, biases: list[torch.Tensor | None]) -> torch.Tensor:
        """Slot inputs (B, N, D) -> head params (B, N, P); N = 1 in a position pass."""
        x = self.dropout(slots)
        for block, bias in zip(self.blocks, biases):
            x = self.checkpointed(block, run, x, bias)
        return self.out(self.norm(x))

"""The prior interface every architecture implements.

A prior is an exact autoregressive distribution over symbol grids
``x: LongTensor (B, C, H, W)`` with values in [0, K), in raster order over (H, W) and
channel order inside a position. A prior = a backbone (``network``, one file per
architecture) + a head (``latentar.heads``).

    forward(x, cond=None) -> params (B, P, H, W)   one teacher-forced pass, causal
    log_prob(x, cond=None) -> (B,)                 nats, summed over C·H·W
    loss(x, cond=None) -> scalar                   mean nats per dimension
    sample(n, cond=None, *, temperature, top_k, generator) -> long (n, C, H, W)

``cond`` is None, a LongTensor of class labels (B,), or a dict with keys ``labels``
(B,) and/or ``context`` (B, h, w) — a spatial code map such as VQ-VAE-2 top codes.

A new prior is one file in ``latentar/priors/`` (the package imports every module in
it; nothing else to touch). The checklist for that file:

- a ``@register_prior("name")`` subclass of ``Prior`` with an ``Arch`` dataclass (one
  comment per field) and ``presets`` including ``"tiny"`` (the tests' size) and
  ``"small"`` (a CPU run of a few minutes), plus ``"default"`` and ``"paper"``;
- ``network(z, labels, context)``, causal in raster order;
- the class attributes that say what it is: ``heads`` (the heads it accepts),
  ``channel_masked`` (True: the backbone masks R→G→B groups; False: the head couples
  the channels of a pixel), ``supports_context`` (takes a spatial context map) and
  ``full_context`` (every position sees the whole past; the receptive-field suite
  checks it either way);
- a fast ``sample`` that draws exactly what ``naive_sample`` draws (the shared suite in
  ``tests/test_fast_sampling.py`` checks it);
- imports from ``nn/``, ``heads/`` and ``priors/base.py`` only, never another prior.

The shared suites (``tests/test_priors.py``, ``test_fast_sampling.py``,
``test_receptive_field.py``) parametrize over the registry, so they cover it at once.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
import torch.utils.checkpoint
from torch import nn

from latentar.checks import FRACTION, SYMBOLS, Checked, FieldError, build
from latentar.heads import Head
from latentar.nn.inputs import SYMBOL_KINDS, SymbolInput
from latentar.priors.engine import Knobs, NaiveStepper, Stepper, draw_grids
from latentar.priors.footprint import floor_bytes, sampling_batch
from latentar.registry import HEADS, MODELS, PRIORS
from latentar.saving import Saveable, meta_model


@dataclass
class PriorSpec(Checked):
    """What a prior models, independent of its architecture; every field is checked on creation."""

    label = "prior"
    bounds = {"num_symbols": SYMBOLS, "context_symbols": SYMBOLS, "symbols": SYMBOL_KINDS,
              "class_dropout": FRACTION}

    shape: tuple[int, int, int]  # (C, H, W) of the symbol grid
    num_symbols: int  # K: 256 for 8-bit pixels, 2 for binarized, codebook size for codes
    head: str = "categorical"  # registered head name
    num_classes: int | None = None  # class-conditional when set
    symbols: str = "pixels"  # "pixels" (ordinal, scaled to [-1, 1]) or "codes" (embedded)
    embed_dim: int = 32  # embedding width per channel when symbols == "codes"
    context_symbols: int | None = None  # K of a spatial context map (e.g. top codes)
    context_shape: tuple[int, int] | None = None  # (h, w) of that map
    head_options: dict = field(default_factory=dict)  # extra head arguments, e.g. num_mixtures
    class_dropout: float = 0.0  # > 0: a learned null class, and training labels replaced by it
    #                             with this probability (classifier-free guidance)

    def __post_init__(self):
        super().__post_init__()
        if (self.context_symbols is None) != (self.context_shape is None):
            raise ValueError("context_symbols and context_shape must be given together")
        if self.class_dropout > 0 and self.num_classes is None:
            raise ValueError(f"class_dropout={self.class_dropout} needs a class-conditional prior (num_classes)")

    @property
    def label_rows(self) -> int | None:
        """Rows of the class-bias tables: the classes, plus the null class ``num_classes``
        when ``class_dropout > 0``; None for an unconditional prior."""
        if self.num_classes is None:
            return None
        return self.num_classes + (1 if self.class_dropout > 0 else 0)


class Condition(NamedTuple):
    labels: torch.Tensor | None  # long (B,)
    context: torch.Tensor | None  # long (B, h, w)


def split_cond(cond: Any) -> Condition:
    """Normalise ``cond`` (None, labels tensor, dict, or a ``Condition``) into a ``Condition``."""
    if isinstance(cond, Condition):
        return cond
    if cond is None:
        return Condition(None, None)
    if isinstance(cond, torch.Tensor):
        return Condition(cond, None)
    if isinstance(cond, dict):
        unknown = set(cond) - {"labels", "context"}
        if unknown:
            raise ValueError(f"unknown cond keys {sorted(unknown)}; expected 'labels' and/or 'context'")
        return Condition(cond.get("labels"), cond.get("context"))
    raise TypeError(f"cond must be None, a LongTensor of labels, or a dict; got {type(cond).__name__}")


class Prior(nn.Module, Saveable):
    """Base class. Subclasses define ``Arch`` (a dataclass), ``presets`` and ``network``."""

    model_type = "prior"
    name: ClassVar[str]
    Arch: ClassVar[type]
    presets: ClassVar[dict[str, dict]] = {}
    heads: ClassVar[tuple[str, ...]] = ("categorical",)  # heads this backbone accepts
    channel_masked: ClassVar[bool] = False  # True: the backbone masks R→G→B channel groups
    supports_context: ClassVar[bool] = False  # accepts a spatial context map
    full_context: ClassVar[bool] = False  # every position sees every earlier one (no blind spot)
    Stepper: ClassVar[type[Stepper]] = NaiveStepper  # the fast sampler's stepper (see engine.py)
    checkpointable: ClassVar[bool] = False  # its network routes its big blocks through ``checkpointed``

    def __init__(self, spec: PriorSpec, arch: Any):
        super().__init__()
        self.spec, self.arch = spec, arch
        self.checkpoint_activations = False  # set with ``set_activation_checkpointing``
        self.compiled = False  # set with ``set_compile``
        self.channels_last = False  # set with ``set_channels_last``
        self._check_spec(spec)
        C, _, _ = spec.shape
        self.input = SymbolInput(spec.symbols, spec.num_symbols, spec.embed_dim)
        self.head: Head = HEADS.get(spec.head)(C, spec.num_symbols, couple_channels=not self.channel_masked,
                                               **spec.head_options)

    def _check_spec(self, spec: PriorSpec) -> None:
        if spec.head not in self.heads:
            HEADS.get(spec.head)  # unknown names raise with the known list
            raise ValueError(f"prior {self.name!r} does not take head {spec.head!r}; "
                             f"it takes {list(self.heads)}")
        if spec.head == "logistic_mixture" and spec.symbols != "pixels":
            raise ValueError("head 'logistic_mixture' models ordinal pixels; codes need 'categorical'")
        if spec.context_shape is not None and not self.supports_context:
            raise ValueError(f"prior {self.name!r} does not take a spatial context")

    # ---- construction and saving -------------------------------------------------
    @classmethod
    def make_arch(cls, preset: str | None = None, **overrides) -> Any:
        """The architecture dataclass: defaults, then the named preset, then overrides."""
        values: dict = {}
        if preset is not None:
            if preset not in cls.presets:
                raise ValueError(f"unknown preset {preset!r} for prior {cls.name!r}; "
                                 f"known presets: {sorted(cls.presets)}")
            values.update(cls.presets[preset])
        known = {f.name for f in dataclasses.fields(cls.Arch)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown argument(s) {sorted(unknown)} for prior {cls.name!r}; "
                            f"it takes {sorted(known)}")
        values.update(overrides)
        return cls.Arch(**values)

    def config_dict(self) -> dict:
        return {"name": self.name, "spec": asdict(self.spec), "arch": asdict(self.arch)}

    @classmethod
    def from_config(cls, config: dict) -> "Prior":
        """The prior ``config_dict`` describes; every value is checked before a layer is built."""
        keys = ["arch", "name", "spec"]
        if not isinstance(config, dict) or sorted(config) != keys or not isinstance(config["name"], str):
            raise FieldError(f"a prior config must be a dict with the keys {keys} and a prior name, "
                             f"got {config!r:.200}")
        prior_cls = PRIORS.get(config["name"])
        return prior_cls(build(PriorSpec, config["spec"], "prior"),
                         build(prior_cls.Arch, config["arch"], prior_cls.name))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def memory_floor(self) -> tuple[int, str]:
        """(bytes, what they are) of one grid and one forward at batch 1 (``priors.footprint``)."""
        return floor_bytes(self)

    # ---- activation checkpointing (memory for big configurations) ----------------
    def set_activation_checkpointing(self, on: bool) -> None:
        """Recompute the activations of each big block in the backward pass instead of keeping
        them (``torch.utils.checkpoint``): less memory, more time; the same values and gradients."""
        if on and not self.checkpointable:
            raise ValueError(f"prior {self.name!r} does not support checkpoint_activations")
        self.checkpoint_activations = bool(on)

    def checkpointed(self, fn, *args):
        """``fn(*args)``, its activations recomputed in backward when checkpointing is on and a
        gradient is being recorded (training); a plain call otherwise."""
        if self.checkpoint_activations and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    # ---- compilation (speed) -------------------------------------------------------
    def set_compile(self, on: bool) -> None:
        """Run ``loss`` through ``torch.compile``: the inputs are checked eagerly, then
        ``validated_loss`` (the network and the head, no host synchronisation) runs compiled.
        The same values up to float rounding; the weights and their names do not change."""
        self.compiled = bool(on)

    def set_channels_last(self, on: bool) -> None:
        """Keep the 4-D weights and the network's input (so its feature maps) in channels-last
        memory format, which some CPUs' and GPUs' convolutions run faster; the same values up to
        float rounding, the same names. Saved weights are made contiguous as they are written."""
        self.channels_last = bool(on)
        self.to(memory_format=torch.channels_last if on else torch.contiguous_format)

    # ---- the distribution --------------------------------------------------------
    def network(self, z: torch.Tensor, labels: torch.Tensor | None,
                context: torch.Tensor | None) -> torch.Tensor:
        """The backbone: floats z (B, C·E, H, W) -> params (B, P, H, W), causal in raster order."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """x integer (B, C, H, W) -> head params (B, P, H, W)."""
        return self.validated_params(x, *self.check_inputs(x, cond))

    def validated_params(self, x: torch.Tensor, labels: torch.Tensor | None,
                         context: torch.Tensor | None) -> torch.Tensor:
        """``forward`` of inputs that ``check_inputs`` has passed: no check, no host sync."""
        if self.training and labels is not None and self.spec.class_dropout > 0:  # like dropout
            dropped = torch.rand(labels.shape, device=labels.device) < self.spec.class_dropout
            labels = labels.masked_fill(dropped, self.spec.num_classes)  # the null class
        z = self.input(x.long())  # (B, C·E, H, W)
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        return self.network(z, labels, context)

    def validated_loss(self, x: torch.Tensor, labels: torch.Tensor | None,
                       context: torch.Tensor | None) -> torch.Tensor:
        """``loss`` of inputs that ``check_inputs`` has passed: the region ``set_compile`` compiles."""
        return -self.head.log_prob(self.validated_params(x, labels, context), x.long()).mean()

    def log_prob_per_symbol(self, x: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """x integer (B, C, H, W) -> log p(x_{c,h,w} | everything earlier), nats (B, C, H, W)."""
        params = self(x, cond)  # checks x
        return self.head.log_prob(params, x.long())

    def log_prob(self, x: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """x long (B, C, H, W) -> log p(x) in nats, (B,)."""
        return self.log_prob_per_symbol(x, cond).flatten(1).sum(1)

    def loss(self, x: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """Mean negative log-likelihood in nats per dimension (symbol), a scalar."""
        if not self.compiled:  # through ``__call__``, so module hooks (FSDP's unsharding) run
            return -self.log_prob_per_symbol(x, cond).mean()
        labels, context = self.check_inputs(x, cond)
        return compiled(type(self).validated_loss)(self, x, labels, context)

    def sample(self, n: int, cond: Any = None, *, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, cfg_scale: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw n grids -> long (n, C, H, W) with this prior's fast stepper (``Stepper``).

        The knobs are those of ``latentar.priors.engine``: temperature scales each symbol's
        conditional log-probabilities, top_k / top_p keep the most likely values, cfg_scale
        guides a prior built with ``class_dropout > 0``. Defaults draw from the exact model.
        Memory: see ``draw_in_batches``; n grids that cannot fit raise a ``MemoryCapError``."""
        knobs = Knobs(temperature, top_k, top_p, cfg_scale)
        return self.draw_in_batches(*self.blank_grids(n, cond, knobs), knobs, generator=generator)

    def naive_sample(self, n: int, cond: Any = None, *, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None, cfg_scale: float = 1.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """The reference sampler: one whole forward pass per symbol draw (``NaiveStepper``)."""
        knobs = Knobs(temperature, top_k, top_p, cfg_scale)
        return self.draw_in_batches(*self.blank_grids(n, cond, knobs), knobs, stepper=NaiveStepper,
                                    generator=generator)

    def blank_grids(self, n: int, cond: Any = None, knobs: Knobs | None = None) -> tuple[torch.Tensor, Condition]:
        """Start of a sampler: zeros long (n, C, H, W) on this prior's device, and ``cond``
        for n grids (an int label repeated), checked against the spec; first, n is checked to
        fit the memory cap (``priors.footprint.sampling_batch``) before anything is allocated."""
        n = check_num_samples(n)
        sampling_batch(self, n, knobs is not None and knobs.guided, f"drawing n={n} grids")
        x = torch.zeros(n, *self.spec.shape, dtype=torch.long, device=self.device)
        return x, self.check_inputs(x, self.expand_cond(n, cond))

    def draw_in_batches(self, x: torch.Tensor, cond: Condition, knobs: Knobs, *, start_row: int = 0,
                        stepper: type[Stepper] | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """``engine.draw_grids`` over x long (n, C, H, W), written in place, in batches of as many
        grids as fit the memory cap (``priors.footprint.sampling_batch``) -> x.

        The batches run in order and draw from the one ``generator``. When all n grids fit in
        one batch (the usual case) the draws are exactly those of one ``draw_grids`` call; when
        they do not, they differ from them but depend only on the seed and the batch size, so
        the same seed under the same cap (``--max-memory``) gives the same samples."""
        n, (labels, context) = len(x), cond
        batch = sampling_batch(self, n, knobs.guided, f"drawing n={n} grids")
        for start in range(0, n, batch):
            part = slice(start, start + batch)
            x[part] = draw_grids(self, x[part], None if labels is None else labels[part],
                                 None if context is None else context[part], knobs, start_row=start_row,
                                 stepper=stepper, generator=generator)
        return x

    def redraw(self, x: torch.Tensor, start_row: int, cond: Any = None, *, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, cfg_scale: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Redraw every symbol of x at rows >= start_row given the rows above (completion).

        x integer (B, C, H, W) -> a new long (B, C, H, W); the same driver and fast stepper
        as ``sample``, which first walks the kept rows to fill its caches.
        """
        H = self.spec.shape[1]
        if not is_integer(start_row) or not 0 <= start_row <= H:
            raise ValueError(f"start_row must be an integer in [0, {H}], got {start_row!r}")
        cond = self.check_inputs(x, cond)
        x = x.to(self.device, torch.long, copy=True)  # long: draws may exceed the input's dtype
        knobs = Knobs(temperature, top_k, top_p, cfg_scale)
        return self.draw_in_batches(x, cond, knobs, start_row=start_row, generator=generator)

    # ---- input checks ------------------------------------------------------------
    def expand_cond(self, n: int, cond: Any) -> Any:
        """Turn a single label (int) into n labels and move cond to this prior's device."""
        labels, context = (cond, None) if is_integer(cond) else split_cond(cond)
        return make_cond(labels, context, n=n, device=self.device)

    def check_inputs(self, x: torch.Tensor, cond: Any) -> Condition:
        """Validate x (any integer dtype) and cond against the spec; returns the split
        condition with long labels and context."""
        C, H, W = self.spec.shape
        K = self.spec.num_symbols
        check_integer_tensor(x, "x", f"(B, {C}, {H}, {W}) of symbols")
        if x.dim() != 4 or tuple(x.shape[1:]) != (C, H, W):
            raise ValueError(f"x must have shape (B, {C}, {H}, {W}) for this prior, got {tuple(x.shape)}")
        if (bad := outside(x, K)) is not None:
            raise ValueError(f"x has symbols in [{bad[0]}, {bad[1]}], expected [0, {K})")
        labels, context = split_cond(cond)
        check_labels(labels, self.spec.num_classes, x.shape[0])
        if self.spec.context_shape is None:
            if context is not None:
                raise ValueError(f"prior {self.name!r} was built without a spatial context")
        else:
            check_context(context, self.spec.context_symbols, self.spec.context_shape, x.shape[0])
        return Condition(labels.long() if labels is not None else None,
                         context.long() if context is not None else None)


# Inductor's CPU code generator (torch 2.14) emits C++ that does not build when it fuses two
# identical bf16 reductions horizontally into one loop (it declares the converted accumulator
# twice): the bias gradients of two biased layers whose outputs are summed, as in every gated
# residual unit with an auxiliary input. One node per horizontal fusion avoids it; the option
# is read by the CPU back end only.
COMPILE_OPTIONS = {"cpp.max_horizontal_fusion_size": 1}


@functools.cache
def compiled(fn):
    """``torch.compile(fn)``, made once per function: a function of the prior (an argument,
    not a bound ``self``), so a copy of a prior (the EMA) runs its own weights through it."""
    return torch.compile(fn, options=COMPILE_OPTIONS)


def make_cond(labels: Any = None, context: torch.Tensor | None = None, *, n: int | None = None,
              device: torch.device | None = None) -> dict | None:
    """Labels and a spatial context -> the ``cond`` a prior takes: ``{"labels": (n,), "context":
    (n, h, w)}`` without the absent ones, or None when both are. An int label is one class for
    all ``n`` grids; tensors move to ``device`` (when given). ``Prior.check_inputs`` checks them."""
    if is_integer(labels):
        labels = torch.full((n,), int(labels), dtype=torch.long)
    cond = {key: value.to(device) if isinstance(value, torch.Tensor) and device is not None else value
            for key, value in (("labels", labels), ("context", context)) if value is not None}
    return cond or None


def is_integer(value: Any) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_num_samples(n: Any) -> int:
    """The number of grids a sampler draws: an integer >= 1."""
    if not is_integer(n) or n < 1:
        raise ValueError(f"n (the number of grids to draw) must be an integer >= 1, got {n!r}")
    return int(n)


def check_integer_tensor(value: Any, name: str, shape: str) -> None:
    """``value`` must be a tensor of an integer dtype (not bool, not floating point)."""
    if isinstance(value, torch.Tensor) and not (value.dtype.is_floating_point or value.dtype.is_complex
                                                or value.dtype == torch.bool):
        return
    got = f"a {value.dtype} tensor" if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"
    raise TypeError(f"{name} must be an integer tensor {shape}, got {got}")


def outside(values: torch.Tensor, size: int) -> tuple[int, int] | None:
    """(min, max) of integer ``values`` when some lie outside [0, size), else None."""
    if not values.numel():
        return None
    low, high = torch.aminmax(values.long())  # long: min/max lack some unsigned dtypes
    low, high = int(low), int(high)  # the one host synchronisation of a check
    return (low, high) if low < 0 or high >= size else None


def check_labels(labels: torch.Tensor | None, num_classes: int | None, batch: int) -> None:
    """Class labels for ``batch`` grids: an integer tensor (batch,) in [0, num_classes)."""
    if num_classes is None:
        if labels is not None:
            raise ValueError("this prior is unconditional (num_classes=None) but labels were given")
        return
    if labels is None:
        raise ValueError(f"this prior is class-conditional ({num_classes} classes); pass labels (B,)")
    check_integer_tensor(labels, "labels", f"({batch},) of classes")
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")
    if (bad := outside(labels, num_classes)) is not None:
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{bad[0]}, {bad[1]}]")


def check_context(context: torch.Tensor | None, symbols: int, shape: tuple[int, int], batch: int) -> None:
    """A spatial context for ``batch`` grids: an integer tensor (batch, h, w) in [0, symbols)."""
    if context is None:
        raise ValueError(f"this prior needs a spatial context of shape (B, {shape[0]}, {shape[1]})")
    check_integer_tensor(context, "context", f"({batch}, {shape[0]}, {shape[1]}) of symbols")
    if tuple(context.shape) != (batch, *shape):
        raise ValueError(f"context must have shape ({batch}, {shape[0]}, {shape[1]}), "
                         f"got {tuple(context.shape)}")
    if (bad := outside(context, symbols)) is not None:
        raise ValueError(f"context symbols must lie in [0, {symbols}), got [{bad[0]}, {bad[1]}]")


MODELS.register("prior")(Prior)


def register_prior(name: str):
    """Class decorator: register a Prior subclass under ``name`` and set its ``name``."""

    def add(cls):
        cls.name = name
        return PRIORS.register(name)(cls)

    return add


def build_prior(name: str, shape: tuple[int, int, int], num_symbols: int, head: str = "categorical",
                num_classes: int | None = None, *, symbols: str = "pixels", embed_dim: int = 32,
                context_symbols: int | None = None, context_shape: tuple[int, int] | None = None,
                preset: str | None = None, head_options: dict | None = None, class_dropout: float = 0.0,
                **arch_kwargs) -> Prior:
    """Build a registered prior, e.g. ``build_prior("pixelcnn", (1, 28, 28), 2)``;
    ``class_dropout > 0`` (with ``num_classes``) adds the null class of classifier-free guidance."""
    cls = PRIORS.get(name)
    spec = PriorSpec(shape=shape, num_symbols=num_symbols, head=head, num_classes=num_classes,
                     symbols=symbols, embed_dim=embed_dim, context_symbols=context_symbols,
                     context_shape=context_shape, head_options=dict(head_options or {}),
                     class_dropout=class_dropout)
    arch = cls.make_arch(preset, **arch_kwargs)
    meta_model(lambda: cls(spec, arch), f"prior {name!r}", {"prior": asdict(spec), name: asdict(arch)})
    return cls(spec, arch)


def list_priors() -> list[str]:
    return PRIORS.names()

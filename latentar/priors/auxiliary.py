"""PixelCNN with auxiliary variables (Kolesnikov & Lampert 2017, "PixelCNN Models with Auxiliary
Variables for Natural Image Modeling"): p(x) = p(a) · p(x | a), with a = f(x) deterministic.

    prior = build_prior("auxiliary", (1, 28, 28), 256, aux="pyramid", base="pixelsnail", preset="small")

The prior is a chain of **stages**, each a registered prior built with the composite's head,
classes, symbol kind and class dropout, the preset ``stage_preset`` and the arch options
``stage_options`` (``build_prior``'s keywords that are not fields of ``AuxiliaryArch`` go there),
then ``aux_options`` (stage 0) or ``detail_options`` (the others):

- ``aux="pyramid"``: stage 0 (``base_aux``) models the coarsest level, x subsampled by 2 in each
  direction ``levels`` times (``auxiliaries.coarse``); each later stage (``base_detail``) models
  the next finer level over its full grid, given the coarser level as a spatial context, with the
  coarse positions fixed to the coarser level's values.
- ``aux="grayscale"``: stage 0 models the gray levels (1, H, W) of ``gray_levels`` symbols
  (``auxiliaries.grayscale``); stage 1 models x given them as a spatial context, every channel's
  conditional renormalised over the values still consistent with its pixel's gray level.

Decisions:

- **Exact**: ``log_prob`` is log p(a) + log p(x | a), where p(x | a) is the product of the detail
  stage's conditionals, each renormalised over the values a allows (``auxiliaries``: one value at a
  pyramid's coarse position, so log 1 = 0 there; an interval of each channel for a gray level), so
  it puts all its mass on {x : f(x) = a}. Sampling applies the same renormalisation
  (``Stepper.allowed`` in the engine), so samples follow ``log_prob``, and every sample's auxiliary
  is stage 0's draw.
- **Detail stage = the full grid with the coarse level as context**: it needs a base that takes a
  spatial context (``context_priors()``: checked, named in the error). It sees the whole coarser
  level, the pixels below and to the right included, any such base serves unchanged, and its coarse
  positions are fixed by the same renormalisation as the grayscale auxiliary. Known-first orders
  would need an any-order base and see the coarse level only as past symbols of one order.
- The context is single-channel symbols: one coarse pixel of C > 1 channels becomes a 2×2 block of
  symbols c·K + a_c (``auxiliaries.coarse_context``): C·K + 1 context symbols, not K^C.
- A base that takes any order serves in its first order (``orders[0]``), for scoring and sampling.
- The stages train together from one ``loss``, the nats of both factors over the C·H·W symbols of x.
  ``log_prob_per_symbol`` charges each symbol its detail-stage conditional plus, at a pyramid's coarse
  positions, the coarser level's nats there (recursively), or, in channel 0, the gray level's.
- A known region of x has no conditional this chain computes exactly (p(x_known) sums over a), so
  ``complete`` and ``log_prob(known=)`` take only an empty region.
- Class-conditional: every stage is; ``cfg_scale`` guides every stage with its own null class.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, cast

import torch
from torch import nn

from latentar.checks import DEPTH, SYMBOLS, Checked
from latentar.priors.auxiliaries import (
    GrayscaleRule,
    PyramidRule,
    Restriction,
    coarse,
    coarse_context,
    coarse_shape,
    context_spec,
    grayscale,
    luma_weights,
)
from latentar.priors.base import Prior, build_prior, context_priors, list_priors, register_prior
from latentar.priors.condition import Condition
from latentar.priors.engine import Knobs, NaiveStepper, Stepper
from latentar.priors.engine import Stepper as StepperBase  # ``Auxiliary.Stepper`` names a subclass
from latentar.priors.regions import known_masks
from latentar.priors.spec import PriorSpec

AUXILIARIES = ("pyramid", "grayscale")


@dataclass
class AuxiliaryArch(Checked):
    label = "auxiliary"
    bounds = {"aux": AUXILIARIES, "levels": DEPTH, "gray_levels": SYMBOLS}

    aux: str = "pyramid"  # the auxiliary a = f(x): "pyramid" (x subsampled by 2) or "grayscale" (quantised luma)
    base: str = "pixelsnail"  # the registered prior of every stage, unless base_aux / base_detail is given
    base_aux: str | None = None  # the prior of a (stage 0); None: base
    base_detail: str | None = None  # the prior of x given a; it must take a spatial context; None: base
    levels: int = 1  # pyramid levels below x: a = x subsampled by 2^levels (grayscale: 1)
    gray_levels: int = 16  # L, the gray levels of the grayscale auxiliary (16: 4 bits), at most K
    stage_preset: str | None = None  # the preset every stage is built with; None: the stage's defaults
    stage_options: dict = field(default_factory=dict)  # arch options of every stage (e.g. hidden=32)
    aux_options: dict = field(default_factory=dict)  # arch options of stage 0 alone, over stage_options
    detail_options: dict = field(default_factory=dict)  # arch options of the detail stages alone, likewise


class RestrictedStepper(Stepper):
    """A stage's own stepper (``inner``), its symbols restricted to the values ``rule`` allows
    given the auxiliary (``restricted`` makes one per stepper and rule). Walks one order per call
    (h, w ints), as ``Auxiliary`` draws its stages."""

    inner: ClassVar[type[Stepper]] = NaiveStepper
    rule: ClassVar[Restriction | None] = None

    def __init__(self, prior: Prior, x: torch.Tensor, cond: Condition, order: torch.Tensor | None):
        super().__init__(prior, x, cond, order)
        self.walker = self.inner(prior, x, cond, order)
        self.info = None if self.rule is None else self.rule.info(cond.context, x.shape[-2:], x.device)

    def params(self, h, w, c):
        return self.walker.params(h, w, c)

    def take(self, h, w):
        self.walker.take(h, w)

    def allowed(self, h, w, c):
        if self.rule is None or self.info is None:
            return None
        return self.rule.allowed(self.info[:, h, w], self.x[:, :, h, w], c)  # (n, K)


@functools.cache
def restricted(inner: type[Stepper], rule: Restriction) -> type[Stepper]:
    """``inner`` (a stage's fast stepper or the naive one) restricted by ``rule``."""
    attributes = {"inner": inner, "rule": rule, "needs_history": inner.needs_history}
    return cast(type[Stepper], type(f"Restricted{inner.__name__}", (RestrictedStepper,), attributes))


@register_prior("auxiliary")
class Auxiliary(Prior):
    """The composite p(a) · p(x | a); see the module docstring. ``stages`` coarsest first; ``head``
    is the last stage's (it models x), for the engine and its tracing tests."""

    Arch = AuxiliaryArch
    presets = {
        "tiny": dict(stage_preset="tiny"),
        "small": dict(stage_preset="small"),
        "default": {},
        "paper": dict(stage_preset="paper"),  # the base's paper sizes in every stage
    }
    Stepper = RestrictedStepper  # each stage through its own fast stepper, restricted (``draw_new``)
    composite = True
    checkpointable = True  # passed on to the stages whose base supports it (``set_activation_checkpointing``)

    def __init__(self, spec: PriorSpec, arch: AuxiliaryArch):
        nn.Module.__init__(self)
        self.spec, self.arch = spec, arch
        self.checkpoint_activations, self.compiled, self.channels_last = False, False, False
        if spec.context_shape is not None:
            raise ValueError("prior 'auxiliary' makes the context of its detail stages itself; it takes none")
        self.rule = self.check_auxiliary(spec, arch)
        detail = arch.base_detail or arch.base
        if detail in list_priors() and detail not in context_priors():
            raise ValueError(f"the detail stage of an auxiliary prior needs a base that takes a spatial context, "
                             f"one of {context_priors()}; got {detail!r}")
        self.stages = nn.ModuleList([self.stage(arch.base_aux or arch.base, shape, K, None, arch.aux_options)
                                     if i == 0 else self.stage(detail, shape, K, context, arch.detail_options)
                                     for i, (shape, K, context) in enumerate(self.stage_plan())])
        # the last stage's head, not registered twice (its weights are the stage's)
        object.__setattr__(self, "head", self.stage_priors[-1].head)

    @staticmethod
    def check_auxiliary(spec: PriorSpec, arch: AuxiliaryArch) -> Restriction:
        K = spec.num_symbols
        if arch.aux == "pyramid":
            return PyramidRule(K)
        if spec.symbols != "pixels":
            raise ValueError(f"a grayscale auxiliary needs ordinal pixels, got symbols={spec.symbols!r}")
        if arch.levels != 1:
            raise ValueError(f"a grayscale auxiliary has one level; levels={arch.levels} is for aux='pyramid'")
        if arch.gray_levels > K:
            raise ValueError(f"auxiliary.gray_levels ({arch.gray_levels}) must be at most the symbols K ({K})")
        luma_weights(spec.shape[0])  # 1 or 3 channels
        return GrayscaleRule(K, arch.gray_levels, spec.shape[0])

    def stage_plan(self) -> list[tuple[tuple[int, int, int], int, tuple[int, tuple[int, int]] | None]]:
        """Per stage, coarsest first: (shape, K, (context_symbols, context_shape) or None)."""
        C, H, W = self.spec.shape
        K, arch = self.spec.num_symbols, self.arch
        if arch.aux == "grayscale":
            return [((1, H, W), arch.gray_levels, None), ((C, H, W), K, (arch.gray_levels, (H, W)))]
        shapes = [self.spec.shape]
        for _ in range(arch.levels):
            shapes.append(coarse_shape(shapes[-1]))
        shapes.reverse()  # coarsest first
        return [(shapes[0], K, None)] + [(shape, K, context_spec(above, K)) for above, shape in zip(shapes, shapes[1:])]

    def stage(self, name: str, shape: tuple[int, int, int], K: int,
              context: tuple[int, tuple[int, int]] | None, options: dict) -> Prior:
        spec = self.spec
        symbols, context_shape = (None, None) if context is None else context
        return build_prior(name, shape, K, spec.head, spec.num_classes, symbols=spec.symbols,
                           embed_dim=spec.embed_dim, context_symbols=symbols, context_shape=context_shape,
                           preset=self.arch.stage_preset, head_options=spec.head_options,
                           class_dropout=spec.class_dropout, augmentations=spec.augmentations,
                           **{**self.arch.stage_options, **options})

    @classmethod
    def make_arch(cls, preset: str | None = None, **overrides) -> Any:
        """``Prior.make_arch``; keywords that are not ``AuxiliaryArch`` fields join ``stage_options``."""
        own = {f.name for f in dataclasses.fields(cls.Arch)}
        stage = {key: overrides.pop(key) for key in list(overrides) if key not in own}
        if stage:
            overrides["stage_options"] = {**overrides.get("stage_options", {}), **stage}
        return super().make_arch(preset, **overrides)

    # ---- the chain ---------------------------------------------------------------
    @property
    def stage_priors(self) -> list[Prior]:
        """``stages`` as priors, coarsest first."""
        return [cast(Prior, stage) for stage in self.stages]

    def stage_grids(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x long (B, C, H, W) -> what each stage models, coarsest first (the last is x)."""
        if self.arch.aux == "grayscale":
            return [grayscale(x, self.spec.num_symbols, self.arch.gray_levels), x]
        grids = [x]
        for _ in range(self.arch.levels):
            grids.append(coarse(grids[-1]))
        return grids[::-1]

    def context(self, above: torch.Tensor) -> torch.Tensor:
        """The grid of the stage above -> the next stage's spatial context long (B, h, w)."""
        return above[:, 0] if self.arch.aux == "grayscale" else coarse_context(above, self.spec.num_symbols)

    def stage_conditions(self, grids: list[torch.Tensor], cond: Condition) -> list[Condition]:
        return [Condition(labels=cond.labels, augment=cond.augment,
                          context=None if i == 0 else self.context(grids[i - 1]))
                for i in range(len(grids))]

    def validated_params(self, x: torch.Tensor, cond: Condition, order: torch.Tensor | None = None) -> torch.Tensor:
        """Every stage's teacher-forced head params, each flattened per grid, concatenated ->
        (B, Σ_stages P·h·w): a composite has no params map of one network."""
        grids = self.stage_grids(x.long())
        conds = self.stage_conditions(grids, cond)
        return torch.cat([stage.validated_params(grid, stage_cond, stage.orders[0]).flatten(1)
                          for stage, grid, stage_cond in zip(self.stage_priors, grids, conds)], dim=1)

    def validated_log_probs(self, x: torch.Tensor, cond: Condition) -> torch.Tensor:
        """Per-symbol nats (B, C, H, W) of checked inputs, summing to log p(x) (module docstring)."""
        grids = self.stage_grids(x.long())
        conds = self.stage_conditions(grids, cond)
        first, *details = self.stage_priors
        nats = first.head.log_prob(first.validated_params(grids[0], conds[0], first.orders[0]), grids[0])
        for stage, grid, stage_cond in zip(details, grids[1:], conds[1:]):
            params = stage.validated_params(grid, stage_cond, stage.orders[0])  # (B, P, h, w)
            info = self.rule.info(stage_cond.context, grid.shape[-2:], grid.device)
            detail = self.rule.log_probs(stage.head, params, grid, info)  # (B, C, h, w)
            nats = detail + self.placed(nats, detail)
        return nats

    def placed(self, above: torch.Tensor, detail: torch.Tensor) -> torch.Tensor:
        """The nats of the stage above (B, ·, h', w') where the detail stage's symbols carry them."""
        out = torch.zeros_like(detail)
        if self.arch.aux == "grayscale":
            out[:, :1] = above  # the gray level, with channel 0
        else:
            out[:, :, ::2, ::2] = above  # each coarse pixel, at its copy
        return out

    # ---- the prior interface -------------------------------------------------------
    def log_prob_per_symbol(self, x: torch.Tensor, cond: Any = None, *, order: Any = None) -> torch.Tensor:
        cond = self.check_inputs(x, cond)
        if order is not None:
            self.order_at(order)  # raster only
        return self.validated_log_probs(x, cond)

    def log_prob(self, x: torch.Tensor, cond: Any = None, *, order: Any = None, known: Any = None) -> torch.Tensor:
        """log p(a) + log p(x | a), nats (B,); ``order`` raster only, ``known`` an empty region only."""
        if known is not None:
            self.refuse_region(known, len(x))
        return self.log_prob_per_symbol(x, cond, order=order).flatten(1).sum(1)

    def validated_loss(self, x: torch.Tensor, cond: Condition) -> torch.Tensor:
        return -self.validated_log_probs(x, cond).mean()

    def draw_new(self, n: int, cond: Any, order: Any, knobs: Knobs, batch_size: int | None,
                 stepper: type[StepperBase], generator: torch.Generator | None) -> torch.Tensor:
        """Stage 0 draws a, each later stage the next grid given the one above, restricted to the
        values consistent with it, each through its own fast stepper (the naive one when
        ``stepper`` is ``NaiveStepper``), with the same knobs and generator."""
        if order is not None:
            self.order_at(order)  # raster only
        _, cond = self.blank_grids(n, cond)
        naive = stepper is NaiveStepper
        first, *details = self.stage_priors
        labels = Condition(labels=cond.labels, augment=cond.augment)
        grid = first.draw_new(n, labels, 0, knobs, batch_size, NaiveStepper if naive else type(first).Stepper,
                              generator)
        for stage in details:
            start = torch.zeros(n, *stage.spec.shape, dtype=torch.long, device=self.device)
            if self.arch.aux == "pyramid":
                start[:, :, ::2, ::2] = grid  # the coarse positions, which the rule keeps
            walker = restricted(NaiveStepper if naive else type(stage).Stepper, self.rule)  # type: ignore[arg-type]  # a class is Hashable: python/mypy#11470
            grid = stage.draw_in_batches(start, replace(labels, context=self.context(grid)), knobs,
                                         stage.grids_per_pass(n, knobs, batch_size), order=stage.orders[0],
                                         stepper=walker, generator=generator)
        return grid

    def complete(self, x: torch.Tensor, known: torch.Tensor, cond: Any = None, *, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, cfg_scale: float = 1.0,
                 generator: torch.Generator | None = None, batch_size: int | None = None) -> torch.Tensor:
        """New grids for an empty ``known`` region (a region of x has no exact conditional here)."""
        cond = self.check_inputs(x, cond)
        self.refuse_region(known, len(x))
        return self.draw_new(len(x), cond, None, Knobs(temperature, top_k, top_p, cfg_scale), batch_size,
                             type(self).Stepper, generator)

    def refuse_region(self, known: Any, batch: int) -> None:
        _, H, W = self.spec.shape
        if known_masks(known, batch, H, W).any():
            raise ValueError("prior 'auxiliary' draws its auxiliary a = f(x) first, so it has no exact conditional "
                             "given a known region of x; it takes only an empty region")

    def set_activation_checkpointing(self, on: bool) -> None:
        """Checkpointing in every stage whose base supports it; refused, named, when none does."""
        able = [stage for stage in self.stage_priors if stage.checkpointable]
        if on and not able:
            raise ValueError(f"prior 'auxiliary' does not support checkpoint_activations with the stages "
                             f"{[stage.name for stage in self.stage_priors]}: none of them does")
        for stage in able:
            stage.set_activation_checkpointing(on)
        self.checkpoint_activations = bool(on)

    def set_channels_last(self, on: bool) -> None:
        super().set_channels_last(on)
        for stage in self.stage_priors:
            stage.set_channels_last(on)

"""The prior interface every architecture implements, and the registry of priors.

A prior is an exact autoregressive distribution over symbol grids
``x: LongTensor (B, C, H, W)`` with values in [0, K), in raster order over (H, W) (or, for a
prior that takes any order, the uniform mixture over its ``orders``: ``latentar.priors.orders``)
and channel order inside a position. A prior = a backbone (``network``, one file per
architecture) + a head (``latentar.heads``).

    forward(x, cond=None, *, order=None) -> params (B, P, H, W)   one teacher-forced pass, causal
    log_prob(x, cond=None, *, order=None, known=None) -> (B,)     nats, summed over C·H·W (or the unknown part)
    loss(x, cond=None) -> scalar                                  mean nats per dimension
    sample(n, cond=None, *, order, temperature, top_k, top_p, cfg_scale, generator) -> long (n, C, H, W)
    complete(x, known, cond=None, *, knobs, generator) -> long (B, C, H, W)   the unknown part redrawn
    orders -> long (n_orders, H·W)                                the orders the distribution mixes

``cond`` is any form that ``latentar.priors.condition`` accepts (None, class labels (B,), an
int class when sampling, a dict with ``labels``, ``context`` and/or ``augment``, a ``Condition``); past the
input checks, the network and the sampler see one ``Condition``.

Beside the priors, this package holds: ``spec`` (``PriorSpec``), ``condition`` (``Condition``,
``as_condition``), ``checks`` (value checks), ``engine`` (the sampling engine and ``Stepper``),
``orders`` (generation orders of a grid), ``regions`` (known regions and mixtures of orders),
``auxiliaries`` (the auxiliary variables of composite priors and the values consistent with them),
``layer_cache`` (``PassPrior`` and ``PassStepper``: priors whose network runs through the
passes of ``latentar.nn.passes``), ``recurrent`` (``RecurrentPrior``, ``RecurrentStepper``),
``footprint`` (memory estimates) and ``compiling`` (``torch.compile`` of the loss).

A new prior is one file in ``latentar/priors/`` (the package imports every module in it;
nothing else to touch). The checklist for that file, which ``tests/test_priors.py`` holds
for every registered prior:

- a ``@register_prior("name")`` subclass of ``Prior`` (or of ``PassPrior`` /
  ``RecurrentPrior``) with an ``Arch`` dataclass (a comment on every field) and ``presets``
  including ``"tiny"`` (the tests' size), ``"small"`` (a CPU run of a few minutes),
  ``"default"`` and ``"paper"``;
- ``network(z, cond)``, causal in raster order (class and augmentation biases: one
  ``class_biases(spec.label_rows, sizes, spec.augment_sizes)`` of ``latentar.nn.conditioning``,
  read with ``(cond.labels, cond.augment)``); or, with ``any_order = True``, ``network(z, cond, order=None)``
  causal in any order (H·W,) and an ``orders`` property of its own;
- the class attributes that say what it is: ``channel_masked`` (True: the backbone masks
  R→G→B groups; False: the head couples the channels of a pixel; an arch that chooses it
  overrides ``masks_channels``, and a prior whose arch makes it take any order sets its own
  ``any_order``), ``supports_context``
  (takes a spatial context map), ``full_context`` (every position sees the whole past; the
  receptive-field suite checks it either way), ``checkpointable``. It takes every registered
  head that does not refuse its setting (``Head.refusal``: what the head declares it can
  model); ``refused_heads`` names any head it cannot use, each with the reason;
- a fast ``Stepper`` (``latentar.priors.engine``) that draws exactly what ``naive_sample``
  draws (``tests/test_fast_sampling.py`` checks it), never an override of ``sample``:
  ``PassStepper`` for a ``PassPrior``, ``RecurrentStepper`` for a ``RecurrentPrior``, else a
  ``Stepper`` subclass in the prior's own file, typed against the prior;
- imports from ``nn/``, ``heads/`` and the modules of this package listed above, never
  another prior.

A **composite** prior (``composite = True``: ``auxiliary``, p(a) · p(x | a)) chains registered
priors as its stages instead of a network: it overrides the scoring (``validated_params``,
``log_prob_per_symbol``, ``log_prob``, ``validated_loss``) and ``draw_new`` (each stage through
its own fast stepper), never ``sample``; the suites' single-network checks (causality by
gradients, receptive fields, known regions) apply to its stages, which are registered priors.

The shared suites (``tests/test_priors.py``, ``test_fast_sampling.py``, ``test_engine.py``,
``test_receptive_field.py``) parametrize over the prior and head registries, so they cover
it at once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from typing import Any, ClassVar

import torch
import torch.utils.checkpoint
from torch import nn

from latentar.checks import FieldError, build, check_value
from latentar.heads import Head
from latentar.nn.inputs import SymbolInput
from latentar.priors.checks import check_integer_tensor, check_num_samples, is_integer, outside
from latentar.priors.compiling import compiled
from latentar.priors.condition import Condition, as_condition, check_condition
from latentar.priors.engine import Knobs, NaiveStepper, check_prior_order, draw_grids
from latentar.priors.engine import Stepper as StepperBase  # ``Prior.Stepper`` names a subclass
from latentar.priors.footprint import floor_bytes, sampling_batch
from latentar.priors.orders import raster
from latentar.priors.regions import known_masks, mask_groups, posterior_orders, region_log_prob, region_orders
from latentar.priors.spec import PriorSpec
from latentar.registry import HEADS, MODELS, PRIORS
from latentar.saving import Saveable, meta_model


class Prior(nn.Module, Saveable):
    """Base class. Subclasses define ``Arch`` (a dataclass), ``presets`` and ``network``."""

    model_type = "prior"
    name: ClassVar[str]
    Arch: ClassVar[type]
    presets: ClassVar[dict[str, dict]] = {}
    refused_heads: ClassVar[dict[str, str]] = {}  # head name -> why this backbone cannot use it
    channel_masked: bool = False  # True: the backbone masks R→G→B channel groups (``masks_channels``)
    supports_context: ClassVar[bool] = False  # accepts a spatial context map
    full_context: ClassVar[bool] = False  # every position sees every earlier one (no blind spot)
    Stepper: ClassVar[type[StepperBase]] = NaiveStepper  # the fast sampler's stepper (see engine.py)
    checkpointable: ClassVar[bool] = False  # its network routes its big blocks through ``checkpointed``
    any_order: bool = False  # generates in any order: ``network(z, cond, order=None)``, its own ``orders``
    #                          (the class's value; an instance whose arch chooses sets its own)
    composite: ClassVar[bool] = False  # p(a)·p(x | a) over stage priors (``auxiliary``): no network of its own

    def __init__(self, spec: PriorSpec, arch: Any):
        super().__init__()
        self.spec, self.arch = spec, arch
        self.checkpoint_activations = False  # set with ``set_activation_checkpointing``
        self.compiled = False  # set with ``set_compile``
        self.channels_last = False  # set with ``set_channels_last``
        self.channel_masked = self.masks_channels(arch)
        self._check_spec(spec, arch)
        C, _, _ = spec.shape
        self.input = SymbolInput(spec.symbols, spec.num_symbols, spec.embed_dim)
        self.head: Head = HEADS.get(spec.head)(C, spec.num_symbols, couple_channels=not self.channel_masked,
                                               **spec.head_options)

    @classmethod
    def masks_channels(cls, arch: Any) -> bool:
        """``channel_masked`` of this prior built with ``arch``: the class's value, unless the
        arch chooses it (the sub-pixel tokens of ``transformer``)."""
        return cls.channel_masked

    @classmethod
    def head_refusal(cls, head: str, channels: int, symbols: str, arch: Any = None) -> str | None:
        """Why this prior (built with ``arch``; None: as its class says) cannot model
        ``channels`` channels of ``symbols`` with the registered ``head`` (unknown names raise
        with the known list); None when it can."""
        head_class = HEADS.get(head)
        if head in cls.refused_heads:
            return f"prior {cls.name!r} does not take head {head!r}: {cls.refused_heads[head]}"
        masked = cls.channel_masked if arch is None else cls.masks_channels(arch)
        return head_class.refusal(channels, couple_channels=not masked, symbols=symbols)

    def _check_spec(self, spec: PriorSpec, arch: Any) -> None:
        refusal = self.head_refusal(spec.head, spec.shape[0], spec.symbols, arch)
        if refusal is not None:
            raise ValueError(refusal)
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

    def reach_depth(self) -> int:
        """The depth (its ``num_layers`` / ``num_blocks``) past which a deeper copy of this
        architecture sees no more earlier positions; 0 when max(H, W) layers do, as for a
        stack of 3×3 convolutions (``receptive_field.architecture_reach``)."""
        return 0

    @property
    def num_augmentations(self) -> int:
        """Ids of ``cond["augment"]``: the product of ``spec.augmentations`` (``latentar.augmentations``),
        identity (0) included; 1 for a prior built without augmentations."""
        return self.spec.num_augmentations

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
    def network(self, z: torch.Tensor, cond: Condition) -> torch.Tensor:
        """The backbone: floats z (B, C·E, H, W) and its condition (checked, long) -> params
        (B, P, H, W), causal in raster order. A prior that takes any order (``any_order``)
        defines ``network(z, cond, order=None)`` instead, causal in ``order`` (H·W,)."""
        raise NotImplementedError

    def ordered_network(self, z: torch.Tensor, cond: Condition, order: torch.Tensor | None) -> torch.Tensor:
        """``network`` causal in ``order``, long (H·W,) (None: the network's own order), or
        (B, H·W), grid b causal in order[b] (one pass per distinct order). A prior that cannot
        reorder is causal in its one listed order (raster, or the transformer's block-raster order
        under local 2-D attention; ``order_at`` and the engine refuse any other), so it gets none."""
        if order is None or not self.any_order:
            return self.network(z, cond)
        network: Any = self.network  # an any-order network takes the order
        if order.dim() == 1:
            return network(z, cond, order=order)
        distinct, which = torch.unique(order, dim=0, return_inverse=True)  # (u, H·W), (B,)
        parts = [(index, network(z[index], cond.map(lambda t: t[index]), order=row))
                 for i, row in enumerate(distinct) for index in [(which == i).nonzero().squeeze(1)]]
        params = parts[0][1].new_empty(len(z), *parts[0][1].shape[1:])  # (B, P, H, W)
        for index, part in parts:
            params[index] = part
        return params

    @property
    def orders(self) -> torch.Tensor:
        """The orders whose uniform mixture is this prior's distribution, long (n_orders, H·W) of
        flat positions h·W + w (``latentar.priors.orders``): raster alone for a raster prior; a
        prior that takes any order overrides it with its own."""
        _, H, W = self.spec.shape
        return raster(H, W)[None].to(self.device)

    def order_at(self, order: Any) -> torch.Tensor:
        """The order ``order`` names -> long (H·W,) on this prior's device: an int i, row i of
        ``orders``; a LongTensor (H·W,), that permutation (a raster prior refuses any but raster)."""
        if is_integer(order):
            count = len(self.orders)
            if not 0 <= order < count:
                raise ValueError(f"order must be an index in [0, {count}) of this prior's orders, got {order}")
            return self.orders[order]
        return check_prior_order(self, order)

    def forward(self, x: torch.Tensor, cond: Any = None, *, order: Any = None) -> torch.Tensor:
        """x integer (B, C, H, W) -> head params (B, P, H, W), causal in ``order`` (an index
        into ``orders`` or a LongTensor (H·W,); None: the network's own order)."""
        cond = self.check_inputs(x, cond)
        return self.validated_params(x, cond, None if order is None else self.order_at(order))

    def validated_params(self, x: torch.Tensor, cond: Condition, order: torch.Tensor | None = None) -> torch.Tensor:
        """``forward`` of inputs that ``check_inputs`` has passed (and a checked order or None):
        no check, no host sync."""
        if self.training and cond.labels is not None and self.spec.class_dropout > 0:  # like dropout
            assert self.spec.num_classes is not None  # class_dropout needs classes
            dropped = torch.rand(cond.labels.shape, device=cond.labels.device) < self.spec.class_dropout
            cond = dataclasses.replace(cond, labels=cond.labels.masked_fill(dropped, self.spec.num_classes))
        z = self.input(x.long())  # (B, C·E, H, W)
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        return self.ordered_network(z, cond, order)

    def validated_loss(self, x: torch.Tensor, cond: Condition) -> torch.Tensor:
        """``loss`` of inputs that ``check_inputs`` has passed: the region ``set_compile`` compiles."""
        return -self.head.log_prob(self.validated_params(x, cond), x.long()).mean()

    def log_prob_per_symbol(self, x: torch.Tensor, cond: Any = None, *, order: Any = None) -> torch.Tensor:
        """x integer (B, C, H, W) -> log p(x_{c,h,w} | everything earlier in ``order``), nats
        (B, C, H, W); ``order`` as in ``forward``."""
        params = self(x, cond, order=order)  # checks x
        return self.head.log_prob(params, x.long())

    def log_prob(self, x: torch.Tensor, cond: Any = None, *, order: Any = None, known: Any = None) -> torch.Tensor:
        """x long (B, C, H, W) -> log p(x) in nats, (B,).

        ``order``: None, the uniform mixture over ``orders`` (logsumexp_i log p_i(x) - log n;
        a raster prior's one order); an int i, row i of ``orders`` alone; a LongTensor (H·W,),
        that order (a raster prior refuses any but raster). ``known``: a bool mask (H, W) or
        (B, H, W); then the nats of the unknown symbols given the known ones, exactly, under
        the mixture of the orders made known-first (``latentar.priors.regions``; a raster
        prior needs the known positions to be a raster prefix)."""
        cond = self.check_inputs(x, cond)
        _, H, W = self.spec.shape
        masks = known_masks(torch.zeros(H, W, dtype=torch.bool) if known is None else known, len(x), H, W)
        listed = self.orders if order is None else self.order_at(order)[None]  # (n, H·W)
        return region_log_prob(self, x, cond, masks, listed)

    def loss(self, x: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """Mean negative log-likelihood in nats per dimension (symbol), a scalar."""
        if not self.compiled:  # through ``__call__``, so module hooks (FSDP's unsharding) run
            return -self.log_prob_per_symbol(x, cond).mean()
        return compiled(type(self).validated_loss)(self, x, self.check_inputs(x, cond))

    def sample(self, n: int, cond: Any = None, *, order: Any = None, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, cfg_scale: float = 1.0,
               generator: torch.Generator | None = None, batch_size: int | None = None) -> torch.Tensor:
        """Draw n grids -> long (n, C, H, W) with this prior's fast stepper (``Stepper``).

        ``order``: None, each grid draws its order uniformly from ``orders`` (the mixture; a
        raster prior's one order, which draws nothing); an int i or a LongTensor (H·W,), that
        order for every grid (as in ``log_prob``). The knobs are those of
        ``latentar.priors.engine``: temperature scales each symbol's conditional
        log-probabilities, top_k / top_p keep the most likely values, cfg_scale guides a prior
        built with ``class_dropout > 0``. Defaults draw from the exact model. Memory: see
        ``draw_in_batches``; n grids that cannot fit raise a ``MemoryCapError``; ``batch_size``
        bounds the grids of one pass further (None: as many as fit)."""
        return self.draw_new(n, cond, order, Knobs(temperature, top_k, top_p, cfg_scale), batch_size,
                             type(self).Stepper, generator)

    def naive_sample(self, n: int, cond: Any = None, *, order: Any = None, temperature: float = 1.0,
                     top_k: int | None = None, top_p: float | None = None, cfg_scale: float = 1.0,
                     generator: torch.Generator | None = None, batch_size: int | None = None) -> torch.Tensor:
        """The reference sampler: one whole forward pass per symbol draw (``NaiveStepper``)."""
        return self.draw_new(n, cond, order, Knobs(temperature, top_k, top_p, cfg_scale), batch_size,
                             NaiveStepper, generator)

    def draw_new(self, n: int, cond: Any, order: Any, knobs: Knobs, batch_size: int | None,
                 stepper: type[StepperBase], generator: torch.Generator | None) -> torch.Tensor:
        """``sample`` with the stepper given."""
        batch = self.grids_per_pass(n, knobs, batch_size)
        x, cond = self.blank_grids(n, cond)
        if order is not None:
            return self.draw_in_batches(x, cond, knobs, batch, order=self.order_at(order), stepper=stepper,
                                        generator=generator)
        orders = self.orders  # (n_orders, H·W)
        choice = None if len(orders) == 1 else torch.randint(
            len(orders), (n,), generator=generator, device=self.device if generator is None else generator.device)
        return self.draw_by_order(x, cond, knobs, batch, orders, choice, stepper=stepper, generator=generator)

    def draw_by_order(self, x: torch.Tensor, cond: Condition, knobs: Knobs, batch: int, orders: torch.Tensor,
                      choice: torch.Tensor | None, *, start: int = 0, stepper: type[StepperBase] | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """``draw_in_batches`` of x long (n, C, H, W), written in place, grid b in the order
        ``orders[choice[b]]`` (orders long (n_orders, H·W), choice long (n,); None: all in
        ``orders[0]``), from step ``start`` of its order, every grid in one walk -> x."""
        order = orders[0] if choice is None else orders[choice.to(orders.device)]  # (H·W,) or (n, H·W)
        return self.draw_in_batches(x, cond, knobs, batch, order=order, start=start, stepper=stepper,
                                    generator=generator)

    def grids_per_pass(self, n: int, knobs: Knobs, batch_size: int | None = None) -> int:
        """How many of n grids one sampler pass draws so that it fits the memory cap
        (``priors.footprint.sampling_batch``), at most ``batch_size`` (None: no bound); asked
        before any grid is allocated, and n grids that cannot fit at all raise a
        ``MemoryCapError`` naming n."""
        n = check_num_samples(n)
        bound = n if batch_size is None else check_value(batch_size, int, "batch_size")
        return min(bound, sampling_batch(self, n, knobs.guided, f"drawing n={n} grids"))

    def blank_grids(self, n: int, cond: Any = None) -> tuple[torch.Tensor, Condition]:
        """Start of a sampler: zeros long (n, C, H, W) on this prior's device, and ``cond`` for
        n grids (an int class for all n) on that device, checked against the spec."""
        n = check_num_samples(n)
        x = torch.zeros(n, *self.spec.shape, dtype=torch.long, device=self.device)
        return x, self.check_inputs(x, as_condition(cond, n=n, device=self.device))

    def draw_in_batches(self, x: torch.Tensor, cond: Condition, knobs: Knobs, batch: int, *,
                        order: torch.Tensor | None = None, start: int = 0, stepper: type[StepperBase] | None = None,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """``engine.draw_grids`` over x long (n, C, H, W), written in place, ``batch`` grids at a
        time (``grids_per_pass``), in ``order`` from its step ``start`` -> x.

        The batches run in order and draw from the one ``generator``. When all n grids fit in
        one batch (the usual case) the draws are exactly those of one ``draw_grids`` call; when
        they do not, they differ from them but depend only on the seed and the batch size, so
        the same seed under the same cap (``--max-memory``) gives the same samples. ``order``:
        (H·W,) for every grid, or (n, H·W), one per grid (``draw_grids``)."""
        n = len(x)
        for first in range(0, n, batch):
            part = slice(first, first + batch)
            x[part] = draw_grids(self, x[part], cond.map(lambda t: t[part]), knobs, start=start, stepper=stepper,
                                 order=order if order is None or order.dim() == 1 else order[part],
                                 generator=generator)
        return x

    def complete(self, x: torch.Tensor, known: torch.Tensor, cond: Any = None, *, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, cfg_scale: float = 1.0,
                 generator: torch.Generator | None = None, batch_size: int | None = None) -> torch.Tensor:
        """Redraw the unknown symbols of x integer (B, C, H, W) from p(x_unknown | x_known) ->
        a new long (B, C, H, W), the known symbols kept.

        ``known``: bool (H, W) or (B, H, W), True where the symbol is given. Each grid is drawn
        in one of its orders made known-first (``latentar.priors.regions``), chosen from the
        exact posterior w_i ∝ p_i(x_known) when there are several, so the draws follow the
        mixture's conditional; a raster prior needs the known positions to be a raster prefix.
        The same driver and fast stepper as ``sample``, which first walks the known positions
        to fill its caches; the knobs and ``batch_size`` as there."""
        cond = self.check_inputs(x, cond)
        x = x.to(self.device, torch.long, copy=True)  # long: draws may exceed the input's dtype
        knobs = Knobs(temperature, top_k, top_p, cfg_scale)
        batch = self.grids_per_pass(len(x), knobs, batch_size)
        _, H, W = self.spec.shape
        for mask, index in mask_groups(known_masks(known, len(x), H, W)):
            orders, start = region_orders(self, mask, self.orders)
            orders = orders.to(self.device)
            grids, grid_cond = x[index], cond.map(lambda t: t[index])
            choice = None if len(orders) == 1 else posterior_orders(self, grids, grid_cond, orders, mask, batch,
                                                                    generator)
            x[index] = self.draw_by_order(grids, grid_cond, knobs, batch, orders, choice, start=start,
                                          generator=generator)
        return x

    def redraw(self, x: torch.Tensor, start_row: int, cond: Any = None, *, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, cfg_scale: float = 1.0,
               generator: torch.Generator | None = None, batch_size: int | None = None) -> torch.Tensor:
        """``complete`` with the rows < start_row known: redraw every symbol of x at rows >=
        start_row given the rows above. x integer (B, C, H, W) -> a new long (B, C, H, W)."""
        _, H, W = self.spec.shape
        if not is_integer(start_row) or not 0 <= start_row <= H:
            raise ValueError(f"start_row must be an integer in [0, {H}], got {start_row!r}")
        known = (torch.arange(H) < start_row)[:, None].expand(H, W)  # (H, W)
        return self.complete(x, known, cond, temperature=temperature, top_k=top_k, top_p=top_p,
                             cfg_scale=cfg_scale, generator=generator, batch_size=batch_size)

    # ---- input checks ------------------------------------------------------------
    def check_inputs(self, x: torch.Tensor, cond: Any) -> Condition:
        """Validate x (any integer dtype) and cond (any form ``as_condition`` takes) against the
        spec -> the ``Condition``, its tensors long."""
        C, H, W = self.spec.shape
        K = self.spec.num_symbols
        check_integer_tensor(x, "x", f"(B, {C}, {H}, {W}) of symbols")
        if x.dim() != 4 or tuple(x.shape[1:]) != (C, H, W):
            raise ValueError(f"x must have shape (B, {C}, {H}, {W}) for this prior, got {tuple(x.shape)}")
        if (bad := outside(x, K)) is not None:
            raise ValueError(f"x has symbols in [{bad[0]}, {bad[1]}], expected [0, {K})")
        return check_condition(as_condition(cond), self.spec, x.shape[0], self.name, x.device)


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
                augmentations: tuple[str, ...] = (), **arch_kwargs) -> Prior:
    """Build a registered prior, e.g. ``build_prior("pixelcnn", (1, 28, 28), 2)``;
    ``class_dropout > 0`` (with ``num_classes``) adds the null class of classifier-free guidance;
    ``augmentations`` (e.g. ("rot90", "transpose")) conditions it on an augmentation id
    (``cond={"augment": ids}``, 0 = identity, the default; ``latentar.augmentations``)."""
    cls = PRIORS.get(name)
    spec = PriorSpec(shape=shape, num_symbols=num_symbols, head=head, num_classes=num_classes,
                     symbols=symbols, embed_dim=embed_dim, context_symbols=context_symbols,
                     context_shape=context_shape, head_options=dict(head_options or {}),
                     class_dropout=class_dropout, augmentations=augmentations)
    arch = cls.make_arch(preset, **arch_kwargs)
    meta_model(lambda: cls(spec, arch), f"prior {name!r}", {"prior": asdict(spec), name: asdict(arch)})
    return cls(spec, arch)


def list_priors() -> list[str]:
    return PRIORS.names()


def context_priors() -> list[str]:
    """The registered priors that take a spatial context (``Prior.supports_context``)."""
    return [name for name in PRIORS.names() if PRIORS.get(name).supports_context]

"""The sampling engine: one generation loop for every prior, every head, every knob.

    x = draw_grids(prior, x, cond, Knobs(temperature=0.9, top_p=0.95), generator=g)

The driver owns the generation order over (h, w) (raster, or the permutation of the H·W
positions it is given: ``latentar.priors.orders``; a prior that takes any order may get one
per grid, all walked in one batch), the channel order inside a position, the
head call and the knobs. A prior contributes a ``Stepper``: started on n grids and a
condition, it gives the head params of one position (and channel, for channel-masked
backbones) and takes the symbols drawn there. ``NaiveStepper`` runs the whole network
at every call and is the reference; a prior's fast stepper (layer caches, KV caches,
recurrent states) must give the same head params and so draw the same samples.

At every symbol the driver asks the head for the log-probabilities of the K values of
that symbol given everything drawn so far (``Head.next_log_probs``), renormalised over the
values the stepper allows (``Stepper.allowed``: every value, except in the detail stage of an
``auxiliary`` prior), then applies, in this order and for every head alike:

1. classifier-free guidance (``cfg_scale`` s != 1): the batch is doubled, the second
   half with the null class; guided = log_softmax(uncond + s · (cond - uncond));
2. temperature T: log_softmax(log p / T), i.e. p^(1/T) renormalised, per symbol;
3. top-k: keep the k most likely values;
4. top-p (nucleus): keep the smallest set of most likely values whose probability
   reaches p;

and draws one value per grid with ``torch.multinomial``. With T = 1, no top-k / top-p
and s = 1 the draws follow the model's exact distribution.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from latentar.nn.modes import eval_mode
from latentar.priors.condition import Condition
from latentar.priors.orders import check_order, raster
from latentar.progress import progress_bar
from latentar.registry import PRIORS

if TYPE_CHECKING:  # the engine drives priors; a prior's module imports the engine
    from latentar.priors.base import Prior


@dataclass(frozen=True)
class Knobs:
    """How to draw: see the module docstring for what each knob does and in which order."""

    temperature: float = 1.0  # > 0; 1 = the model's distribution
    top_k: int | None = None  # keep the k most likely values; None = all
    top_p: float | None = None  # nucleus mass in (0, 1]; None (or 1) = all
    cfg_scale: float = 1.0  # classifier-free guidance scale; 1 = plain conditional sampling

    def __post_init__(self):
        if not _real(self.temperature) or not 0 < self.temperature < math.inf:
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, numbers.Integral)
                                       or self.top_k < 1):
            raise ValueError(f"top_k must be an integer >= 1 or None, got {self.top_k!r}")
        if self.top_p is not None and (not _real(self.top_p) or not 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be a number in (0, 1] or None, got {self.top_p!r}")
        if not _real(self.cfg_scale) or not math.isfinite(self.cfg_scale):
            raise ValueError(f"cfg_scale must be a finite number, got {self.cfg_scale!r}")

    @property
    def guided(self) -> bool:
        return self.cfg_scale != 1.0


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# ---- the knobs, each a transform of log-probabilities (N, K) ---------------------------
def guide(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: log_softmax(uncond + scale · (cond - uncond)); a value
    impossible under either distribution stays impossible."""
    possible = torch.isfinite(cond) & torch.isfinite(uncond)
    mixed = torch.where(possible, uncond + scale * (cond - uncond), float("-inf"))
    return F.log_softmax(mixed, dim=-1)


def apply_temperature(log_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    return log_probs if temperature == 1.0 else F.log_softmax(log_probs / temperature, dim=-1)


def keep_top_k(log_probs: torch.Tensor, k: int | None) -> torch.Tensor:
    if k is None or k >= log_probs.shape[-1]:
        return log_probs
    kth = torch.topk(log_probs, k, dim=-1).values[..., -1:]
    return log_probs.masked_fill(log_probs < kth, float("-inf"))


def keep_top_p(log_probs: torch.Tensor, p: float | None) -> torch.Tensor:
    """Keep the smallest set of most likely values whose probability reaches p (the most
    likely value always stays)."""
    if p is None or p >= 1.0:
        return log_probs
    ordered, order = torch.sort(log_probs, dim=-1, descending=True)
    mass_before = torch.cumsum(F.softmax(ordered, dim=-1), dim=-1) - F.softmax(ordered, dim=-1)
    drop = torch.zeros_like(ordered, dtype=torch.bool).scatter(-1, order, mass_before >= p)
    return log_probs.masked_fill(drop, float("-inf"))


def restrict(log_probs: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """log_probs (N, K) renormalised over the values where ``allowed`` bool (N, K) holds."""
    return F.log_softmax(log_probs.masked_fill(~allowed, float("-inf")), dim=-1)


def draw(log_probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One value per row of log_probs (N, K) -> long (N,)."""
    return torch.multinomial(F.softmax(log_probs, dim=-1), 1, generator=generator).squeeze(-1)


def transformed(log_probs: torch.Tensor, knobs: Knobs, n: int) -> torch.Tensor:
    """The knobs applied to the head's log-probs (n or 2n, K) -> (n, K), in the documented order."""
    if knobs.guided:
        log_probs = guide(log_probs[:n], log_probs[n:], knobs.cfg_scale)
    log_probs = apply_temperature(log_probs, knobs.temperature)
    return keep_top_p(keep_top_k(log_probs, knobs.top_k), knobs.top_p)


# ---- steppers --------------------------------------------------------------------------
class Stepper:
    """One generation of ``prior`` over the grids ``x`` (n, C, H, W) long, position by position.

    The driver walks the positions (h, w) in the generation ``order`` (raster order when it
    is None; a prior whose ``any_order`` is False is only ever walked in its one listed order,
    raster for most, and its stepper gets None); at each one:

    - channel-masked priors: for c in 0..C-1 it calls ``params(h, w, c)`` -> (n, P), draws
      channel c and writes x[:, c, h, w] before asking for channel c + 1;
    - whole-pixel priors: ``params(h, w, None)`` -> (n, P) once, then it draws every channel;

    then ``take(h, w)``: x[:, :, h, w] is final. Completion (drawing from step ``start`` of
    the order) walks the known positions before it the same way without drawing, so caches
    fill; a stepper whose params do not depend on earlier calls sets ``needs_history = False``
    and is not walked there. ``x`` is the driver's tensor (read it, never write it); ``cond``
    is checked, its labels may hold the null class ``prior.spec.num_classes`` under guidance;
    ``order`` is a checked LongTensor (H·W,) on the prior's device, or None (raster). A prior
    that takes any order may also get orders (n, H·W), one per grid: then h and w are long
    (n,), grid i's position at this step, and "at (h, w)" reads x[i, :, h[i], w[i]]. A
    stepper of a prior's own is typed against that prior (``prior: Transformer``).
    """

    needs_history: ClassVar[bool] = True

    def __init__(self, prior: Prior, x: torch.Tensor, cond: Condition, order: torch.Tensor | None):
        self.prior, self.x, self.cond, self.order = prior, x, cond, order

    def params(self, h: Any, w: Any, c: int | None) -> torch.Tensor:
        """(n, P) head params at (h, w), equal up to float reordering to
        ``prior.ordered_network(prior.input(x), cond, order)`` there; for a channel-masked prior,
        channel c's block (the c-th of C equal blocks of P) is, and the driver reads no other."""
        raise NotImplementedError

    def take(self, h: Any, w: Any) -> None:
        """x[:, :, h, w] now holds the symbols drawn at (h, w)."""

    def allowed(self, h: Any, w: Any, c: int) -> torch.Tensor | None:
        """bool (n, K): the values the symbol at (h, w), channel c may take given x so far (the
        driver renormalises the head's log-probabilities over them before the knobs); None: all.
        The detail stage of an ``auxiliary`` prior restricts its symbols to those consistent with
        the auxiliary this way."""
        return None


class NaiveStepper(Stepper):
    """The reference: one whole teacher-forced pass of the network at every call."""

    needs_history = False

    def params(self, h, w, c):
        params = self.prior.ordered_network(self.prior.input(self.x), self.cond, self.order)  # (n, P, H, W)
        return params[grid_rows(h, len(params)), :, h, w]


# ---- orders ----------------------------------------------------------------------------
def any_order_priors() -> list[str]:
    """The registered priors that generate in any order (``Prior.any_order``)."""
    return [name for name in PRIORS.names() if PRIORS.get(name).any_order]


def check_prior_order(prior: Prior, order: Any) -> torch.Tensor:
    """``order`` checked as an order of the prior's grid -> long (H·W,) on the prior's device;
    a prior that cannot reorder refuses any order but its listed ones (``prior.orders``: raster
    for a raster prior), naming the priors that take any order. A prior
    that takes any order also takes orders (n, H·W), one per grid, each checked."""
    _, H, W = prior.spec.shape
    if prior.any_order and isinstance(order, torch.Tensor) and order.dim() == 2:
        return torch.stack([check_order(row, H, W) for row in order]).to(prior.device)
    order = check_order(order, H, W).to(prior.device)
    if not prior.any_order and not any(torch.equal(order.cpu(), own) for own in prior.orders.cpu()):
        own = "raster order only" if torch.equal(prior.orders.cpu(), raster(H, W)[None]) else "its listed orders only"
        raise ValueError(f"prior {prior.name!r} generates in {own} and takes no other order; "
                         f"the priors that take any order are {any_order_priors()}")
    return order


def grid_rows(h: Any, n: int) -> slice | torch.Tensor:
    """The first index that, with h and w, reads each grid at its own position: every row
    (a slice) when h is an int (one order), else arange(n) beside h, w long (n,)."""
    return slice(None) if isinstance(h, int) else torch.arange(n, device=h.device)


# ---- the driver ------------------------------------------------------------------------
def draw_grids(prior: Prior, x: torch.Tensor, cond: Condition, knobs: Knobs, *, order: torch.Tensor | None = None,
               start: int = 0, stepper: type[Stepper] | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw the symbols of x long (n, C, H, W) at the positions ``order[start:]`` given those
    at ``order[:start]`` -> a new long (n, C, H, W). ``order`` is a LongTensor (H·W,) of flat
    positions h·W + w (None: raster, or the one listed order of a prior that cannot reorder, which
    refuses any other), or (n, H·W), grid i
    in order[i] (a prior that takes any order; the grids still walk in one batch); ``cond``
    is checked already; ``stepper`` defaults to the prior's fast one. Eval and inference mode
    inside, the mode restored after."""
    n = x.shape[0]
    C, H, W = prior.spec.shape
    if not 0 <= start <= H * W:
        raise ValueError(f"start must lie in [0, {H * W}], got {start}")
    if order is None:  # raster, or the one order of a prior that cannot reorder
        order = raster(H, W) if prior.any_order else prior.orders[0]
    order = check_prior_order(prior, order)
    if order.dim() == 2 and len(order) != n:
        raise ValueError(f"orders (n, {H * W}) need one row per grid: {len(order)} rows for {n} grids")
    if knobs.guided:
        cond = _with_null_class(prior, cond)
        x = torch.cat([x, x])
        order = order if order.dim() == 1 else torch.cat([order, order])
    else:
        x = x.clone()
    # per step, the (h, w) of every grid: ints for one order, long (n,) each for one order per grid
    positions = ([divmod(p, W) for p in order.tolist()] if order.dim() == 1
                 else list(zip(order.T.div(W, rounding_mode="floor"), order.T.remainder(W))))
    rows = grid_rows(positions[0][0], len(x)) if positions else slice(None)
    head, masked = prior.head, prior.channel_masked
    copies = x.shape[0] // n  # 2 under guidance: both halves take the same draw
    with eval_mode(prior), torch.inference_mode():
        walker = (stepper or type(prior).Stepper)(prior, x, cond, order if prior.any_order else None)
        steps = range(0 if walker.needs_history else start, H * W)
        for step in progress_bar(steps, desc="complete" if start else "sample", unit="position"):
            h, w = positions[step]
            drawing = step >= start
            for c in range(C) if masked else [None]:
                params = walker.params(h, w, c)  # (n or 2n, P)
                for channel in range(C) if c is None else [c]:
                    if drawing:
                        log_probs = head.next_log_probs(params, channel, x[rows, :, h, w])  # (·, K)
                        allowed = walker.allowed(h, w, channel)
                        if allowed is not None:
                            log_probs = restrict(log_probs, allowed)
                        drawn = draw(transformed(log_probs, knobs, n), generator)  # (n,)
                        x[rows, channel, h, w] = drawn if copies == 1 else drawn.repeat(copies)
            walker.take(h, w)
    return x[:n].clone()


def _with_null_class(prior: Prior, cond: Condition) -> Condition:
    """The condition of a doubled batch: every field twice, the labels of the second half the
    null class ``num_classes``."""
    spec, labels = prior.spec, cond.labels
    if labels is None or not spec.class_dropout > 0:
        raise ValueError(f"cfg_scale != 1 needs a class-conditional prior trained with class_dropout > 0 "
                         f"(a learned null class); this one has num_classes={spec.num_classes}, "
                         f"class_dropout={spec.class_dropout}")
    assert spec.num_classes is not None  # class_dropout needs classes
    doubled = cond.map(lambda t: torch.cat([t, t]))
    return replace(doubled, labels=torch.cat([labels, torch.full_like(labels, spec.num_classes)]))

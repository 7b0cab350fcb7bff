"""What a prior's distribution is conditioned on: one ``Condition``, built by one function.

    cond = as_condition(cond, n=n, device=prior.device)

Wherever a prior takes ``cond`` (``forward``, ``log_prob``, ``loss``, ``sample``, ``redraw``)
it accepts: None; class labels, an integer tensor (B,); an int class, where the number of
grids n is known (``sample``: the same class for all n); a dict with any of the keys
``labels``, ``context`` and ``augment``; or a ``Condition``. ``as_condition`` turns every one of them into a
``Condition``, and ``check_condition`` checks it against a prior's spec. Past that point a
prior, its network and its stepper see only the ``Condition``.

The augmentation id of distribution augmentation (``latentar.augmentations``; 0 = identity, the
data's own distribution) is the field ``augment``: a prior built with ``augmentations`` gets
identity ids where none are given, and a prior built without refuses any. Every field is per
grid (dimension 0), so batching, moving and guidance (``Condition.map``) carry it unchanged,
and every prior receives it through the same ``network(z, cond)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from latentar.augmentations import check_ids
from latentar.priors.checks import check_integer_tensor, is_integer, outside
from latentar.priors.spec import PriorSpec


@dataclass(frozen=True, eq=False)
class Condition:
    """The conditioning of B grids; every field is None or a tensor with one row per grid."""

    labels: torch.Tensor | None = None  # long (B,): class labels (the null class num_classes under guidance)
    context: torch.Tensor | None = None  # long (B, h, w): a spatial context known in full (VQ-VAE-2 top codes)
    augment: torch.Tensor | None = None  # long (B,): augmentation ids, 0 = identity (``latentar.augmentations``)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Condition:
        """``fn`` applied to every field that is given, e.g. ``cond.map(lambda t: t[:4])``."""
        return Condition(**{name: None if value is None else fn(value) for name, value in self.fields().items()})

    def fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


FIELDS = tuple(f.name for f in dataclasses.fields(Condition))


def as_condition(cond: Any = None, *, n: int | None = None, device: torch.device | str | None = None,
                 spec: PriorSpec | None = None) -> Condition:
    """The one way to a ``Condition``, from any form of ``cond`` the module docstring lists.

    ``n``: an int class becomes labels long (n,). ``device``: tensors move there. ``spec``: keep
    only what a prior of that spec is conditioned on (labels when it is class-conditional, a
    context when it was built with one), so that a dataset's labels reach an unconditional
    prior as nothing. Values are checked against a prior by ``check_condition``, not here.
    """
    if isinstance(cond, Condition):
        values = cond.fields()
    elif cond is None:
        values = {}
    elif isinstance(cond, torch.Tensor) or (is_integer(cond) and n is not None):
        values = {"labels": cond}
    elif isinstance(cond, Mapping):
        unknown = set(cond) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown cond keys {sorted(unknown)}; expected {' and/or '.join(map(repr, FIELDS))}")
        values = dict(cond)
    else:
        raise TypeError("cond must be None, a LongTensor of labels, an int class (when sampling n grids), "
                        f"a dict or a Condition; got {type(cond).__name__}")
    if n is not None and is_integer(values.get("labels")):
        values["labels"] = torch.full((n,), int(values["labels"]), dtype=torch.long)
    if spec is not None:
        values.update(labels=values.get("labels") if spec.num_classes is not None else None,
                      context=values.get("context") if spec.context_shape is not None else None)
    if device is not None:
        values = {name: value.to(device) if isinstance(value, torch.Tensor) else value
                  for name, value in values.items()}
    return Condition(**values)


def check_condition(cond: Condition, spec: PriorSpec, batch: int, prior: str,
                    device: torch.device | str | None = None) -> Condition:
    """``cond`` for ``batch`` grids checked against the spec of the prior named ``prior`` ->
    the same condition with long tensors; a prior built with augmentations gets identity ids
    (zeros on ``device``) where none are given."""
    check_labels(cond.labels, spec.num_classes, batch)
    if cond.augment is not None and not spec.augmentations:
        raise ValueError(f"prior {prior!r} was built without augmentations, so it takes no augmentation ids "
                         "(build it with augmentations=...)")
    if cond.augment is not None:
        check_ids(cond.augment, spec.num_augmentations, batch)
    elif spec.augmentations:
        cond = dataclasses.replace(cond, augment=torch.zeros(batch, dtype=torch.long, device=device))
    if spec.context_shape is None:
        if cond.context is not None:
            raise ValueError(f"prior {prior!r} was built without a spatial context")
    else:
        assert spec.context_symbols is not None  # given together (``PriorSpec``)
        check_context(cond.context, spec.context_symbols, spec.context_shape, batch)
    return cond.map(torch.Tensor.long)


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

"""Checks of config values against their dataclass fields, before anything is built from them.

A config dataclass mixes in ``Checked`` and names itself (``label``); its
``__post_init__`` then checks every field against the field's type annotation and
bound, whichever way the values came (keyword arguments, a recipe table, a
``config.json`` being loaded):

    int            an integer, never a bool; >= 1 unless ``bounds`` says otherwise
                   (most integers in a config are sizes)
    float          a finite number (an integer is widened to float)
    bool, dict     that type
    str            a string; one of the strings when ``bounds`` holds a tuple of them
    X | None       None, or an X
    X | Y          an X, or else a Y
    tuple[X, Y]    a list or tuple of that many values (made a tuple), each checked
    tuple[X, ...]  a list or tuple of any number of X (made a tuple), each checked

A failure raises ``FieldError`` (a ValueError) that names the field, what it takes
and what it got, e.g. ``pixelcnn.hidden must be an integer >= 1, got -1``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping


class FieldError(ValueError):
    """A config value of the wrong type or out of its range."""


@dataclass(frozen=True)
class Bound:
    """The closed range [low, high], or [low, high) with ``open_high``; None: unbounded."""

    low: float | None = None
    high: float | None = None
    open_high: bool = False

    def holds(self, value: float) -> bool:
        if self.low is not None and value < self.low:
            return False
        if self.high is not None and (value >= self.high if self.open_high else value > self.high):
            return False
        return True

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.high is None:
            return "" if self.low is None else f">= {low}"
        if self.low is None:
            return f"{'<' if self.open_high else '<='} {high}"
        return f"in [{low}, {high}{')' if self.open_high else ']'}"


def _number(value: float | None) -> str:
    """An end of a bound in words: an int exactly (a seed's 18446744073709551615), a float in short form."""
    return str(value) if isinstance(value, int) or value is None else f"{value:g}"


SIZE = Bound(low=1)  # widths, depths, kernels, grid sizes
COUNT = Bound(low=0)  # how many of something, where none is fine
MAX_DEPTH = 1024  # layers or blocks of one network: deeper ones take minutes just to build
DEPTH = Bound(1, MAX_DEPTH)  # layers, blocks
DEPTH_OR_NONE = Bound(0, MAX_DEPTH)  # layers or blocks, where none is fine
FRACTION = Bound(0.0, 1.0, open_high=True)  # dropout rates, decays
NON_NEGATIVE = Bound(low=0.0)  # loss weights, thresholds
SYMBOLS = Bound(2, 65536)  # K of a symbol grid: codes are stored as uint16
SEED = Bound(0, 2**64 - 1)  # a sampling seed: the range of torch.Generator.manual_seed (negatives refused)

Rule = Bound | tuple  # a range, or the strings a str field takes


def check_value(value: Any, tp: Any, key: str, rule: Rule | None = None) -> Any:
    """``value`` checked against the type ``tp`` and ``rule`` -> the value, normalised
    (an integer widened to float for a float field, a list made a tuple for a tuple field).

    Raises ``FieldError`` naming ``key`` when the value does not fit.
    """
    ok, normalised = _fit(value, tp, rule)
    if not ok:
        raise FieldError(f"{key} must be {describe(tp, rule)}, got {value!r}")
    return normalised


def _fit(value: Any, tp: Any, rule: Rule | None) -> tuple[bool, Any]:
    """(whether value fits tp and rule, the normalised value)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return type(None) in args, None
        for inner in (a for a in args if a is not type(None)):  # the first type it fits
            ok, normalised = _fit(value, inner, rule)
            if ok:
                return ok, normalised
        return False, value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or (args[-1] is not Ellipsis and len(value) != len(args)):
            return False, value
        item_types = [args[0]] * len(value) if args[-1] is Ellipsis else args
        items = [_fit(v, a, rule) for v, a in zip(value, item_types)]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            return False, value
        bound = rule or SIZE
        assert isinstance(bound, Bound)  # the strings of a tuple rule are for str fields
        return bound.holds(int(value)), int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            return False, value
        assert not isinstance(rule, tuple)  # the strings of a tuple rule are for str fields
        return rule is None or rule.holds(float(value)), float(value)
    if tp is str and isinstance(rule, tuple):
        return isinstance(value, str) and value in rule, value
    return isinstance(value, origin or tp), value


def describe(tp: Any, rule: Rule | None = None) -> str:
    """What a field of type ``tp`` under ``rule`` takes, in words: 'an integer >= 1'."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inners = [describe(a, rule) for a in args if a is not type(None)]
        return " or ".join(inners + ["None"] * (type(None) in args))
    if origin is tuple:
        count = "" if args[-1] is Ellipsis else f"{len(args)} "
        if args[0] is str and isinstance(rule, tuple):
            return f"a list of {count}strings out of {list(rule)}"
        return f"a list of {count}{_plural(describe(args[0], rule))}"
    if tp is str and isinstance(rule, tuple):
        return f"one of {list(rule)}"
    if tp is int:
        return f"an integer {rule or SIZE}"
    if tp is float:
        return f"a finite number {rule or ''}".rstrip()
    names = {bool: "true or false", str: "a string", dict: "a dict"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _plural(words: str) -> str:
    """'an integer >= 1' -> 'integers >= 1'."""
    article, noun, *rest = words.split(" ")
    return " ".join([noun + "s", *rest]) if article in ("a", "an") else words


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


class Checked:
    """Mixin for config dataclasses: every field is checked when an instance is made.

    ``label`` names the config in messages; ``bounds`` maps a field to its ``Rule``.
    """

    label: ClassVar[str] = "config"
    bounds: ClassVar[Mapping[str, Rule]] = {}
    if TYPE_CHECKING:  # set by @dataclass on each config class
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __post_init__(self) -> None:
        cls: type = type(self)  # as `type`: mypy finds type[Self] unhashable (it checks the instances' __hash__)
        hints = _hints(cls)
        for f in dataclasses.fields(self):
            value = check_value(getattr(self, f.name), hints[f.name], f"{self.label}.{f.name}",
                                self.bounds.get(f.name))
            setattr(self, f.name, value)


def build(cls: type, values: Any, label: str):
    """A mapping of field values -> ``cls(**values)``, refusing a value that is not a
    mapping, unknown keys and missing required ones with a ``FieldError`` naming ``label``."""
    if not isinstance(values, Mapping):
        raise FieldError(f"{label} must be a dict of {cls.__name__} fields, got {values!r}")
    fields = dataclasses.fields(cls)
    known = [f.name for f in fields]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise FieldError(f"{label} has unknown key(s) {unknown}; it takes {known}")
    required = [f.name for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in values]
    if missing:
        raise FieldError(f"{label} lacks the key(s) {missing}")
    return cls(**values)

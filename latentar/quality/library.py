"""The metrics library, torch-fidelity, imported only when a metric is measured: it is the
optional extra ``latentar[metrics]``, and without it a measurement says how to install it."""

from __future__ import annotations

import importlib
from types import ModuleType

INSTALL = "pip install 'latentar[metrics]'"


class MissingExtraError(ImportError):
    """A measurement needs a package of an optional extra that is not installed."""


def fidelity(module: str) -> ModuleType:
    """``torch_fidelity.<module>``, or a ``MissingExtraError`` that says how to install it."""
    try:
        return importlib.import_module(f"torch_fidelity.{module}")
    except ImportError as e:
        raise MissingExtraError(f"sample metrics need the package torch-fidelity, which is not installed "
                                f"({e}); install it with: {INSTALL}") from e

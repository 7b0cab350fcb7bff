"""Priors: one file per architecture, each registered by name.

Every module in this package is imported here, so a new prior is one file that defines
its class with ``@register_prior("name")`` (see the checklist in ``priors/base.py``).
"""

import importlib
import pkgutil

from latentar.priors.base import Prior, build_prior, list_priors, register_prior
from latentar.priors.condition import Condition, as_condition
from latentar.priors.spec import PriorSpec

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Condition", "Prior", "PriorSpec", "as_condition", "build_prior", "list_priors", "register_prior"]

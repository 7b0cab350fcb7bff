"""Heads: the likelihood of one position's symbols given the backbone's features.

A new head is one file with a ``@register_head("name")`` subclass of ``Head`` that declares
what it can model (``latentar.heads.base``), plus its import line here.
"""

from latentar.heads.base import Head, register_head
from latentar.heads.categorical import CategoricalHead
from latentar.heads.logistic_mixture import LogisticMixtureHead

__all__ = ["Head", "register_head", "CategoricalHead", "LogisticMixtureHead"]

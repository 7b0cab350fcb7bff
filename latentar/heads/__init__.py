"""Heads: the likelihood of one position's symbols given the backbone's features."""

from latentar.heads.base import Head
from latentar.heads.categorical import CategoricalHead
from latentar.heads.logistic_mixture import LogisticMixtureHead

__all__ = ["Head", "CategoricalHead", "LogisticMixtureHead"]

"""Heads: the likelihood of one position's symbols given the backbone's features."""

from latentar.heads.base import Head, filter_logits, sample_logits
from latentar.heads.categorical import CategoricalHead

__all__ = ["Head", "CategoricalHead", "filter_logits", "sample_logits"]

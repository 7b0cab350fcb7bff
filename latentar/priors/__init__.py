"""Priors: one file per architecture, each registered by name."""

from latentar.priors.base import Prior, PriorSpec, build_prior, list_priors, register_prior
from latentar.priors import pixelcnn  # noqa: F401  (registers "pixelcnn")

__all__ = ["Prior", "PriorSpec", "build_prior", "list_priors", "register_prior"]

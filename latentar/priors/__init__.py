"""Priors: one file per architecture, each registered by name."""

from latentar.priors.base import Prior, PriorSpec, build_prior, list_priors, register_prior
from latentar.priors import pixelcnn  # noqa: F401  (registers "pixelcnn")
from latentar.priors import pixelcnn_pp  # noqa: F401  (registers "pixelcnn_pp")
from latentar.priors import gated_pixelcnn  # noqa: F401  (registers "gated_pixelcnn")
from latentar.priors import pixelsnail  # noqa: F401  (registers "pixelsnail")
from latentar.priors import row_lstm  # noqa: F401  (registers "row_lstm")
from latentar.priors import diagonal_bilstm  # noqa: F401  (registers "diagonal_bilstm")

__all__ = ["Prior", "PriorSpec", "build_prior", "list_priors", "register_prior"]

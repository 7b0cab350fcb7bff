"""latentar: VQ-VAE + autoregressive priors for likelihood-based image generation."""

from latentar import heads  # noqa: F401  (registers the heads)
from latentar.priors import Prior, PriorSpec, build_prior, list_priors
from latentar.registry import UnknownNameError
from latentar.saving import NonFiniteWeightsError, NotAModelError, load
from latentar.evaluation import bits_per_dim, evaluate_prior
from latentar.training import TrainConfig, Trainer
from latentar.vqvae import VQVAE, VQVAEConfig
from latentar.receptive_field import receptive_field
from latentar.sampling import generate

__version__ = "0.1.0"

__all__ = ["Prior", "PriorSpec", "build_prior", "list_priors", "load", "NotAModelError", "NonFiniteWeightsError",
           "UnknownNameError", "__version__", "bits_per_dim", "evaluate_prior", "TrainConfig", "Trainer",
           "VQVAE", "VQVAEConfig", "receptive_field", "generate"]

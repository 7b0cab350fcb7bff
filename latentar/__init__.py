"""latentar: VQ-VAE + autoregressive priors for likelihood-based image generation.

The package root is the public API, re-exported flat from the units below. A unit (a
top-level module or package) imports only units of its own layer or of lower ones, and
no two units import each other, directly or round a loop; ``tests/test_layers.py`` reads
every import (those inside functions too) and holds it so.

Where the order differs from the plain stack "models, data, tools, pipeline, CLI":

- ``checks`` (field checks of the config dataclasses) sits at the bottom with ``registry``:
  priors, VQ-VAEs, datasets and configs all check their fields with it. So does ``files``
  (safe reads and atomic writes): every unit that reads or writes a run's files uses it; and
  ``images`` (PNG grids, image writing, image-path checks) on top of it: the trainer writes its
  preview grids and the commands check their output paths with it.
  ``devices`` (device names -> torch devices) sits there as well: loading, sampling, scoring
  and recipes all place their models with it.
  ``memory`` (the memory cap and the meta-device estimates checked against it) sits there too:
  loading a model, sampling, scoring, benchmarks and recipes all check their sizes with it.
- ``evaluation`` and ``generation`` sit below ``training``: the training objectives score
  batches with ``evaluation``, the training previews draw with ``generation``, and neither
  scoring nor drawing knows of a trainer. ``sampling`` keeps the names it held before
  ``generation`` and ``images`` split it (``from latentar.sampling import generate, save_grid``).
- ``bench`` sits with them, and ``receptive_field`` one layer up: it measures on the same
  random inputs as ``bench`` (``random_cond``).
- ``config`` (the recipe dataclasses, TOML in) is built from ``training``'s ``TrainConfig``
  and ``vqvae``'s ``VQVAEConfig``, so it sits above both; ``plan`` validates a recipe against
  data and models, so it sits above ``config``.
- ``run_files`` (the name of every file in a run folder, and the readers of a finished stage)
  sits with ``saving``: the trainer writes those files, and ``runs`` and the commands read them.

Layers (lowest first):
registry, checks, progress, files, memory, images, version, devices
saving, model_card, run_files
nn, heads, quantizers
priors, vqvae
data
evaluation, generation, sampling, bench
training, receptive_field
config
plan
runs
commands
cli
__main__

"""

from latentar import heads  # noqa: F401  (registers the heads)
from latentar.evaluation import bits_per_dim, evaluate_prior
from latentar.generation import generate
from latentar.priors import Prior, PriorSpec, build_prior, list_priors
from latentar.receptive_field import receptive_field
from latentar.registry import UnknownNameError
from latentar.saving import NonFiniteWeightsError, NotAModelError, load
from latentar.training import TrainConfig, Trainer
from latentar.version import __version__
from latentar.vqvae import VQVAE, VQVAEConfig

__all__ = ["Prior", "PriorSpec", "build_prior", "list_priors", "load", "NotAModelError", "NonFiniteWeightsError",
           "UnknownNameError", "__version__", "bits_per_dim", "evaluate_prior", "TrainConfig", "Trainer",
           "VQVAE", "VQVAEConfig", "receptive_field", "generate"]

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
- ``quality`` (the sample metrics and their feature extractors) sits with them too: it measures
  images with the ``classifier`` (a model, beside the priors and VQ-VAEs); ``runs`` trains that
  classifier and the commands draw the images it measures.
- ``bench`` sits with them, and ``receptive_field`` one layer up: it measures on the same
  random inputs as ``bench`` (``random_cond``).
- ``config`` (the recipe dataclasses, TOML in) is built from ``training``'s ``TrainConfig``
  and ``vqvae``'s ``VQVAEConfig``, so it sits above both; ``plan`` validates a recipe against
  data and models, so it sits above ``config``.
- ``augmentations`` (the transforms of distribution augmentation, ``augment``) sits at the bottom too: a
  prior's spec checks its augmentation types with it, and training applies them to the batches.
- ``hub`` (``hf://user/repo[@revision]`` locations, fetched into the Hub cache) sits below ``files``:
  the readers of ``files`` follow the Hub cache's links from a snapshot's files to their blobs, and no
  other link. ``push`` (`push_to_hub`) sits with ``saving``: it saves, loads and writes a model card.
- ``run_files`` (the name of every file in a run folder, and the readers of a finished stage)
  sits with ``saving``: the trainer writes those files, and ``runs`` and the commands read them.

Layers (lowest first):
registry, checks, progress, hub, files, memory, images, masks, version, devices, augmentations
saving, model_card, run_files, push
nn, heads, quantizers
priors, vqvae, classifier
data
evaluation, generation, sampling, bench, quality
training, receptive_field
config
plan
runs
commands
cli
__main__

"""

from latentar import heads  # noqa: F401  (registers the heads)
from latentar.augmentations import augment
from latentar.classifier import ClassifierConfig, ImageClassifier
from latentar.data import register_dataset
from latentar.evaluation import bits_per_dim, evaluate_prior
from latentar.generation import generate
from latentar.hub import HubError
from latentar.priors import Prior, PriorSpec, build_prior, list_priors
from latentar.push import push_to_hub
from latentar.receptive_field import receptive_field
from latentar.registry import UnknownNameError
from latentar.saving import NonFiniteWeightsError, NotAModelError, load
from latentar.training import TrainConfig, Trainer
from latentar.version import __version__
from latentar.vqvae import VQVAE, Palette, VQVAEConfig

__all__ = ["Prior", "PriorSpec", "build_prior", "list_priors", "load", "NotAModelError", "NonFiniteWeightsError",
           "HubError", "push_to_hub",
           "UnknownNameError", "__version__", "bits_per_dim", "evaluate_prior", "TrainConfig", "Trainer",
           "VQVAE", "VQVAEConfig", "receptive_field", "generate", "register_dataset", "ImageClassifier",
            "ClassifierConfig", "Palette", "augment"]

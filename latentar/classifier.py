"""The dataset classifier: a small CNN whose penultimate layer gives the features that the
sample metrics compare offline (``latentar.quality``), and whose predictions say whether a
class-conditional sample shows its requested class.

    classifier = ImageClassifier(ClassifierConfig(image_shape=(1, 28, 28), num_classes=10))
    logits = classifier(images)            # uint8 (B, C, H, W) -> (B, num_classes)
    features = classifier.features(images)  # uint8 (B, C, H, W) -> (B, config.feature_dim)

It saves and loads like every latentar model (``config.json`` + ``model.safetensors``,
``latentar.load``); its config records the dataset it learned and its test accuracy, so
every number measured with its features can name them. ``latentar train-classifier`` trains one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from latentar.checks import Bound, Checked, build
from latentar.memory import leaf_output_bytes, tensor_bytes
from latentar.registry import MODELS
from latentar.saving import Saveable


@dataclass
class ClassifierConfig(Checked):
    """What an `ImageClassifier` is: its images, classes and widths, and what it was measured at."""

    label: ClassVar[str] = "classifier"
    bounds: ClassVar = {"num_classes": Bound(2, 100_000), "levels": Bound(2, 256), "test_accuracy": Bound(0.0, 1.0)}

    image_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W) of the uint8 images it classifies
    num_classes: int = 10  # classes of the dataset
    levels: int = 256  # pixel levels of its images (2 for binarized data)
    width: int = 32  # channels of the first convolution stage (the second has twice as many)
    feature_dim: int = 128  # size of the penultimate layer: the features the sample metrics compare
    dataset: str | None = None  # the dataset whose training split it learned
    test_accuracy: float | None = None  # its accuracy on that dataset's test split


class ImageClassifier(nn.Module, Saveable):
    """Two convolution stages (two 3×3 convs with ReLU, then a 2×2 max-pool, each), the (H/4, W/4)
    map flattened into a ``feature_dim``-wide hidden layer (the features; where a stroke lies stays
    known, which global pooling would lose) and a linear layer to the logits."""

    model_type = "classifier"

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        (C, H, W), w = config.image_shape, config.width
        if H < 4 or W < 4:
            raise ValueError(f"the classifier pools twice by 2, so its images need H, W >= 4; got {H}×{W}")
        self.body = nn.Sequential(
            nn.Conv2d(C, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * w * (H // 4) * (W // 4), config.feature_dim), nn.ReLU())
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def to_float(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) in [0, levels) -> floats in [-1, 1] on the model's device; anything
        else is refused naming what was expected."""
        shape = tuple(self.config.image_shape)
        if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != shape:
            raise ValueError(f"the classifier takes uint8 images (B, {', '.join(map(str, shape))}), got "
                             f"{images.dtype} {tuple(images.shape)}")
        return images.to(self.device).float() * (2 / (self.config.levels - 1)) - 1

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> the penultimate layer's activations (B, config.feature_dim)."""
        return self.body(self.to_float(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> class logits (B, num_classes)."""
        return self.head(self.features(images))

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """Mean cross-entropy of a batch, and its accuracy (a 0-dim tensor, read when logged)."""
        logits = self(images)
        labels = labels.to(logits.device)
        accuracy = (logits.detach().argmax(1) == labels).float().mean()
        return F.cross_entropy(logits, labels), {"accuracy": accuracy}

    def description(self) -> str:
        """What its features are, for every number measured with them: 'classifier of mnist, test acc 0.991'."""
        accuracy = self.config.test_accuracy
        measured = "test accuracy not recorded" if accuracy is None else f"test acc {accuracy:.3f}"
        return f"classifier of {self.config.dataset or 'an unnamed dataset'}, {measured}"

    def config_dict(self) -> dict:
        return asdict(self.config)

    @classmethod
    def from_config(cls, config: dict) -> "ImageClassifier":
        """The classifier ``config_dict`` describes; every value is checked before a layer is built."""
        return cls(build(ClassifierConfig, config, "classifier"))

    def memory_floor(self) -> tuple[int, str]:
        """One image and the activations of its forward pass at batch 1 (measured on a meta copy)."""
        shape = tuple(self.config.image_shape)
        with torch.device("meta"):
            meta = ImageClassifier(self.config)
        passes = leaf_output_bytes(meta, lambda _: meta(torch.zeros(1, *shape, dtype=torch.uint8, device="meta")))
        return tensor_bytes(shape, torch.uint8) + passes, f"one image {shape} and its forward pass"


MODELS.register("classifier")(ImageClassifier)

"""Feature extractors for the sample metrics: ``extractor(images uint8 (B, C, H, W)) ->
(features (B, D), logits (B, K))``, with a ``name`` that every measured number carries.

- ``classifier:PATH``: a classifier latentar trained on the dataset (``latentar
  train-classifier``); features are its penultimate layer (D = its ``features``), logits its
  classes. Works offline; its numbers compare only with numbers of the same classifier.
- ``inception``: InceptionV3 with the 2015-12-05 weights converted from TensorFlow (the FID of
  papers): the 2048-d pool3 features and the 1008 logits. Grayscale images are repeated to
  3 channels, and torch-fidelity resizes every image to 299×299 (bilinear, as TensorFlow 1 did).
  The weights are read from ``--inception-weights PATH`` or from torch-fidelity's (and
  torchmetrics') cache, ``$TORCH_HOME/hub/checkpoints/``; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch
from torch import nn

from latentar.classifier import ImageClassifier
from latentar.files import read_bytes
from latentar.images import to_display
from latentar.quality.library import fidelity
from latentar.saving import load

INCEPTION = "inception"
CLASSIFIER = "classifier:"
INCEPTION_FILES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
INCEPTION_SHA256_PREFIX = "6726825d"  # the file names carry the start of the weights' sha256 (torch.hub's rule)
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILES[0]
MAX_WEIGHTS_BYTES = 1 << 28  # the Inception weights file is about 91 MB


class ClassifierFeatures(nn.Module):
    """A dataset classifier's penultimate layer and logits; ``name`` says which classifier."""

    def __init__(self, classifier: ImageClassifier, name: str):
        super().__init__()
        self.classifier, self.name = classifier.eval(), name

    def forward(self, images: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (B, C, H, W) with ``levels`` values, which must be the classifier's."""
        if levels != self.classifier.config.levels:
            raise ValueError(f"{self.name} classifies images with {self.classifier.config.levels} levels, "
                             f"these have {levels}")
        features = self.classifier.features(images)  # (B, D)
        return features, self.classifier.head(features)  # (B, D), (B, num_classes)


class InceptionFeatures(nn.Module):
    """InceptionV3 (torch-fidelity's TensorFlow-compatible port): pool3 (B, 2048) and logits (B, 1008)."""

    def __init__(self, state: dict[str, torch.Tensor], name: str):
        super().__init__()
        inception = fidelity("feature_extractor_inceptionv3")
        buffer = io.BytesIO()
        torch.save(state, buffer)  # tensors only (read with weights_only=True), which the library unpickles
        buffer.seek(0)
        self.net = inception.FeatureExtractorInceptionV3(INCEPTION, ["2048", "logits_unbiased"],
                                                         feature_extractor_weights_path=buffer)
        self.name = name

    def forward(self, images: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (B, C, H, W), C = 1 or 3, with ``levels`` values (scaled to [0, 255] first)."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"Inception takes uint8 images (B, 1 or 3, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        rgb = to_display(images, levels).expand(-1, 3, -1, -1)  # grayscale: repeated to 3 channels
        features, logits = self.net(rgb.to(self.device))
        return features, logits

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device


Extractor = ClassifierFeatures | InceptionFeatures


def inception_cache() -> Path:
    """The folder where torch-fidelity and torchmetrics keep the Inception weights they download."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_inception_weights(path: str | Path | None = None) -> Path:
    """``path``, or the first of ``INCEPTION_FILES`` in `inception_cache`; a FileNotFoundError
    naming exactly what was looked for, and where, when there is none."""
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--inception-weights {path} does not exist (or is not a file)")
        return Path(path)
    folder = inception_cache()
    for name in INCEPTION_FILES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"the Inception weights are not on this machine: no {' or '.join(INCEPTION_FILES)} in {folder} "
        f"(torch-fidelity's cache, $TORCH_HOME/hub/checkpoints). Put {INCEPTION_URL} there, or name the file "
        f"with --inception-weights PATH; or measure with a dataset classifier instead: --features classifier:PATH "
        "(its numbers are not comparable with Inception ones)")


def inception_state(path: Path) -> dict[str, torch.Tensor]:
    """The weights in ``path``, checked to be the 2015-12-05 ones (sha256 prefix) and to hold only tensors."""
    data = read_bytes(path, MAX_WEIGHTS_BYTES, follow=True)
    digest = hashlib.sha256(data).hexdigest()
    if not digest.startswith(INCEPTION_SHA256_PREFIX):
        raise ValueError(f"{path} is not the Inception 2015-12-05 weights file: its sha256 is {digest}, "
                         f"expected one that starts with {INCEPTION_SHA256_PREFIX}")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # an unpickling refusal, a truncated file: torch raises several kinds
        raise ValueError(f"{path} is not a PyTorch state dict of tensors: {e}") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a PyTorch state dict of tensors")
    return state


def feature_extractor(spec: str, *, inception_weights: str | Path | None = None,
                      device: str | torch.device = "cpu", shown: str | None = None) -> Extractor:
    """The extractor ``spec`` names ("inception" or "classifier:PATH"), in eval mode on ``device``;
    a classifier's name starts with ``shown`` (default: ``spec``), e.g. "classifier:RUN/classifier"."""
    if spec == INCEPTION:
        path = find_inception_weights(inception_weights)
        try:
            extractor: Extractor = InceptionFeatures(inception_state(path), f"inception-v3 pool3 ({path.name})")
        except RuntimeError as e:  # load_state_dict: names or shapes that are not InceptionV3's
            raise ValueError(f"{path} does not hold the InceptionV3 weights torch-fidelity expects: {e}") from e
    elif spec.startswith(CLASSIFIER) and spec != CLASSIFIER:
        folder = spec.removeprefix(CLASSIFIER)
        model = load(folder, device)
        if not isinstance(model, ImageClassifier):
            raise ValueError(f"--features {spec}: {folder} holds a {type(model).__name__}, not a classifier "
                             "(latentar train-classifier makes one)")
        extractor = ClassifierFeatures(model, f"{shown or spec} ({model.description()})")
    else:
        raise ValueError(f"--features must be {INCEPTION!r} or 'classifier:PATH' (a folder of "
                         f"latentar train-classifier), got {spec!r}")
    return extractor.to(device).eval()

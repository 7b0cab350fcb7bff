"""Sample metrics: FID, KID, precision/recall, density/coverage and IS on hand-made feature
clouds; the Inception features (weights found in the cache, or a clear error naming the
file); the images read from .npy files; the optional extra's install hint."""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest
import torch

from latentar.quality import (
    MissingExtraError,
    density_coverage,
    feature_extractor,
    fid,
    inception_score,
    kid,
    precision_recall,
    sample_scores,
)
from latentar.quality import features as features_module
from latentar.quality.inputs import read_images

# Four real points and four samples on a line (y = 0), k = 1:
#   real  0, 1, 2, 3       each real ball (to the nearest other real point) has radius 1
#   fake  0.5, 1.5, 10, 20 fake balls: 0.5 and 1.5 radius 1, 10 radius 8.5 (to 1.5), 20 radius 10 (to 10)
REAL = torch.tensor([[0.0, 0], [1, 0], [2, 0], [3, 0]])
FAKE = torch.tensor([[0.5, 0], [1.5, 0], [10, 0], [20, 0]])


def cloud(n: int = 200, d: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_fid_of_a_set_with_itself_is_zero_and_a_shift_adds_its_squared_length():
    x = cloud()
    assert abs(fid(x, x)) < 1e-6
    # a shift moves the mean by (1, ..., 1) and keeps the covariance: FID = |shift|^2 = d = 8
    assert fid(x, x + 1) == pytest.approx(8.0, abs=1e-6)
    assert fid(x, cloud(seed=1) * 2) > 1.0  # another spread


def test_kid_is_unbiased_near_zero_on_identical_sets_and_positive_on_shifted_ones():
    x = cloud()
    same_mean, same_std = kid(x, x, subsets=20)
    shifted_mean, _ = kid(x, x + 1, subsets=20)
    assert shifted_mean > 0.5
    assert abs(same_mean) < 0.01 * shifted_mean and same_std >= 0  # unbiased: about 0, may be negative


def test_precision_and_recall_are_one_on_identical_sets():
    x = cloud()
    assert precision_recall(x, x) == (1.0, 1.0)  # k = 3, the default


def test_precision_and_recall_on_a_hand_made_cloud():
    # precision: 0.5 and 1.5 lie in real balls (0.5 from a real point), 10 and 20 do not -> 2/4
    # recall: 0 and 1 lie in the ball of 0.5, 2 in that of 1.5, 3 in that of 10 (radius 8.5) -> 4/4
    assert precision_recall(REAL, FAKE, k=1) == (0.5, 1.0)


def test_density_and_coverage_on_a_hand_made_cloud():
    # density: 0.5 lies in the balls of 0 and 1, 1.5 in those of 1 and 2, 10 and 20 in none
    #          -> (2 + 2 + 0 + 0) / (k · M = 1 · 4) = 1.0
    # coverage: 0, 1, 2 have a sample within radius 1 (0.5, 0.5, 1.5); 3 does not (1.5 away) -> 3/4
    assert density_coverage(REAL, FAKE, k=1) == (1.0, 0.75)
    x = cloud()
    assert density_coverage(x, x)[1] == 1.0  # every real point's ball holds itself


def test_inception_score_of_confident_even_classes_is_their_number():
    logits = 50 * torch.nn.functional.one_hot(torch.arange(100) % 10, 10).double()  # p(y|x) one-hot, p(y) uniform
    assert inception_score(logits, splits=1)[0] == pytest.approx(10.0, rel=1e-6)
    assert inception_score(torch.zeros(100, 10), splits=1)[0] == pytest.approx(1.0)  # no information


def test_sample_scores_refuse_too_few_items_and_mismatched_widths():
    with pytest.raises(ValueError, match="more than k = 3 fake items"):
        sample_scores(cloud(), cloud(n=3))
    with pytest.raises(ValueError, match="differ in width: 8 vs 4"):
        sample_scores(cloud(), cloud(d=4))


def test_missing_library_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_fidelity.metric_fid", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'latentar\[metrics\]'"):
        fid(cloud(), cloud())


# ---------------------------------------------------------------- Inception features
def test_no_inception_weights_names_the_missing_file_and_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError) as error:
        feature_extractor("inception")
    message = str(error.value)
    assert "weights-inception-2015-12-05-6726825d.pth" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message and "classifier:PATH" in message
    with pytest.raises(FileNotFoundError, match="--inception-weights .*nowhere.pth does not exist"):
        feature_extractor("inception", inception_weights=tmp_path / "nowhere.pth")
    with pytest.raises(ValueError, match="--features must be 'inception' or 'classifier:PATH'"):
        feature_extractor("vgg")


def random_inception_weights(monkeypatch, path) -> str:
    """Write InceptionV3 weights of the right names and shapes (random) to ``path`` -> their sha256."""
    from torch_fidelity import feature_extractor_inceptionv3 as module

    with monkeypatch.context() as patched:  # build the network without its real weights
        patched.setattr(module, "load_state_dict_from_url", lambda *args, **kwargs: None)
        patched.setattr(module.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        torch.manual_seed(0)
        state = module.FeatureExtractorInceptionV3("inception", ["2048"]).state_dict()
    torch.save(state, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_inception_features_from_the_cache_take_grayscale_images(monkeypatch, tmp_path):
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    digest = random_inception_weights(monkeypatch, cache / features_module.INCEPTION_FILES[0])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ValueError, match=f"sha256 is {digest}, expected one that starts with 6726825d"):
        feature_extractor("inception")  # random weights are not the 2015-12-05 ones
    monkeypatch.setattr(features_module, "INCEPTION_SHA256_PREFIX", digest[:8])
    extractor = feature_extractor("inception")
    assert "weights-inception-2015-12-05" in extractor.name
    gray = torch.randint(0, 2, (2, 1, 8, 8), dtype=torch.uint8)  # binarized: 2 levels
    features, logits = extractor(gray, 2)
    assert features.shape == (2, 2048) and logits.shape == (2, 1008)
    rgb = (gray * 255).expand(-1, 3, -1, -1)  # the same images, scaled and repeated by hand
    assert torch.allclose(extractor(rgb, 256)[0], features, atol=1e-5)


# ---------------------------------------------------------------- image files
def test_read_images_from_npy_files(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "gray.npy", images)
    read = read_images(tmp_path / "gray.npy", (1, 8, 8), 256, n=4)
    assert read.shape == (4, 1, 8, 8) and torch.equal(read[:, 0], torch.from_numpy(images[:4]))
    np.save(tmp_path / "float.npy", images / 255.0)
    assert torch.equal(read_images(tmp_path / "float.npy", (1, 8, 8), 256)[:, 0], torch.from_numpy(images))
    with pytest.raises(ValueError, match=r"shape \(5, 8, 8\); the reference split's are \(N, 3, 8, 8\)"):
        read_images(tmp_path / "gray.npy", (3, 8, 8), 256)
    with pytest.raises(ValueError, match=r"values up to \d+; the reference split's images take 2 levels"):
        read_images(tmp_path / "gray.npy", (1, 8, 8), 2)
    with pytest.raises(ValueError, match="-n 9 asks for more images than the 5"):
        read_images(tmp_path / "gray.npy", (1, 8, 8), 256, n=9)
    np.save(tmp_path / "loud.npy", images * 2.0)
    with pytest.raises(ValueError, match="floats outside"):
        read_images(tmp_path / "loud.npy", (1, 8, 8), 256)


class PlainFeatures(torch.nn.Module):
    """Features that are no classifier: the pixels themselves."""

    name = "pixels"

    def forward(self, images: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
        flat = images.flatten(1).float()
        return flat, flat


def test_drawn_classes_without_a_classifier_warn_that_class_accuracy_is_missing():
    from latentar.quality.measure import measure, reference_features

    images = torch.randint(0, 256, (12, 1, 4, 4), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    reference = reference_features(PlainFeatures(), images, levels=256, name="tiny/test")
    with pytest.warns(UserWarning, match="no class_accuracy: .* pixels is no classifier; name one with --classifier"):
        result = measure(PlainFeatures(), images, reference, labels=torch.arange(12) % 2)
    assert "class_accuracy" not in result and result["fid"] == pytest.approx(0, abs=1e-3)

"""The sample metrics, computed from two feature matrices: ``real`` (N, D), the reference
split's features, and ``fake`` (M, D), the samples'. Every metric sees the same matrices, so
features are extracted once (``latentar.quality.measure``).

The library is torch-fidelity (0.4), not torchmetrics: torch-fidelity computes FID, KID,
precision/recall and IS from feature matrices (``*_features_to_metric``), so one extraction
serves all of them and any feature extractor fits, where torchmetrics' FID and KID run their
own extractor per metric and it has no precision/recall; and its InceptionV3 is the port of
the TensorFlow graph that papers' FIDs come from (torchmetrics uses the same one).

- FID (Heusel et al. 2017): the Fréchet distance between Gaussians fitted to the two sets.
- KID (Bińkowski et al. 2018): the unbiased MMD² with the cubic polynomial kernel, averaged over
  random subsets (mean ± std); unbiased, so identical sets give about 0 and it can be negative.
- precision / recall (Kynkäänniemi et al. 2019): the share of samples inside the real manifold
  (the union of balls reaching each real point's k-th nearest real neighbour), and of real
  points inside the samples' manifold.
- density / coverage (Naeem et al. 2020): how many real balls a sample lies in, divided by k
  (1 on average when the sets match; above 1 where samples crowd dense regions), and the share
  of real points whose ball holds at least one sample. Not in torch-fidelity: `density_coverage`.
- IS (Salimans et al. 2016): exp of the mean KL between each sample's class distribution and
  their average, from the extractor's logits.
"""

from __future__ import annotations

import torch

from latentar.quality.library import fidelity

K_NEAREST = 3  # the k of the k-NN balls of precision/recall and density/coverage (both papers' default)
KID_SUBSETS = 100  # random subsets KID averages over
KID_SUBSET_SIZE = 1000  # items per subset, at most (fewer when a set is smaller)
ROWS = 4096  # rows of one block of pairwise distances: bounds their memory to ROWS · N floats
SEED = 2020  # KID's subsets and IS's shuffle


def check_features(real: torch.Tensor, fake: torch.Tensor, k: int) -> None:
    """Two float matrices with the same width and more than ``k`` rows each."""
    for name, x in (("real", real), ("fake", fake)):
        if x.dim() != 2 or not x.is_floating_point():
            raise ValueError(f"the {name} features must be a float matrix (N, D), got {x.dtype} {tuple(x.shape)}")
        if len(x) <= k:
            raise ValueError(f"the metrics need more than k = {k} {name} items (k-NN balls), got {len(x)}")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"the real and fake features differ in width: {real.shape[1]} vs {fake.shape[1]}")


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between the Gaussians of ``real`` (N, D) and ``fake`` (M, D)."""
    metric = fidelity("metric_fid")
    stats = [metric.fid_features_to_statistics(x.double().cpu()) for x in (real, fake)]
    return metric.fid_statistics_to_metric(*stats, verbose=False)[metric.KEY_METRIC_FID]


def kid(real: torch.Tensor, fake: torch.Tensor, *, subsets: int = KID_SUBSETS,
        subset_size: int = KID_SUBSET_SIZE, seed: int = SEED) -> tuple[float, float]:
    """(mean, std) of the unbiased polynomial-kernel MMD² over ``subsets`` random subsets of
    min(``subset_size``, N, M) items of each set."""
    metric = fidelity("metric_kid")
    size = min(subset_size, len(real), len(fake))
    out = metric.kid_features_to_metric(fake.double().cpu(), real.double().cpu(), kid_subsets=subsets,
                                        kid_subset_size=size, rng_seed=seed, verbose=False)
    return out[metric.KEY_METRIC_KID_MEAN], out[metric.KEY_METRIC_KID_STD]


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = K_NEAREST) -> tuple[float, float]:
    """(precision, recall) of ``fake`` (M, D) against ``real`` (N, D) with k-NN balls (see the module docstring)."""
    metric = fidelity("metric_prc")
    out = metric.prc_features_to_metric(fake.float(), real.float(), prc_neighborhood=k, prc_batch_size=ROWS,
                                        save_cpu_ram=True, verbose=False)
    return out[metric.KEY_METRIC_PRECISION], out[metric.KEY_METRIC_RECALL]


def kth_neighbour_distance(x: torch.Tensor, k: int) -> torch.Tensor:
    """(N,) distance from each row of ``x`` (N, D) to its k-th nearest other row."""
    return torch.cat([torch.cdist(block, x).kthvalue(k + 1, dim=1).values for block in x.split(ROWS)])


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = K_NEAREST) -> tuple[float, float]:
    """(density, coverage) of ``fake`` (M, D) against ``real`` (N, D) (Naeem et al. 2020).

    With r_i the distance of real point i to its k-th nearest real neighbour:
    density = 1/(k·M) · Σ_j Σ_i [d(fake_j, real_i) <= r_i];
    coverage = 1/N · Σ_i [min_j d(real_i, fake_j) <= r_i]."""
    real, fake = real.float(), fake.float()
    radii = kth_neighbour_distance(real, k)  # (N,)
    inside = 0.0
    nearest = torch.full((len(real),), float("inf"), device=real.device)  # (N,) distance to the closest sample
    for block in fake.split(ROWS):
        distances = torch.cdist(block, real)  # (b, N)
        inside += (distances <= radii).sum().item()
        nearest = torch.minimum(nearest, distances.min(dim=0).values)
    return inside / (k * len(fake)), (nearest <= radii).float().mean().item()


def inception_score(logits: torch.Tensor, splits: int = 10, seed: int = SEED) -> tuple[float, float]:
    """(mean, std) over ``splits`` shuffled parts of exp(E KL(p(y|x) || p(y))), from logits (M, K)."""
    metric = fidelity("metric_isc")
    out = metric.isc_features_to_metric(logits.double().cpu(), splits=min(splits, len(logits)), rng_seed=seed)
    return out[metric.KEY_METRIC_ISC_MEAN], out[metric.KEY_METRIC_ISC_STD]


def sample_scores(real: torch.Tensor, fake: torch.Tensor, k: int = K_NEAREST) -> dict[str, float]:
    """Every feature metric of ``fake`` against ``real``: fid, kid_mean, kid_std, precision,
    recall, density, coverage."""
    check_features(real, fake, k)
    kid_mean, kid_std = kid(real, fake)
    precision, recall = precision_recall(real, fake, k)
    density, coverage = density_coverage(real, fake, k)
    return {"fid": fid(real, fake), "kid_mean": kid_mean, "kid_std": kid_std, "precision": precision,
            "recall": recall, "density": density, "coverage": coverage}

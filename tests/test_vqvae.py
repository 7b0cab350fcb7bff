"""The VQ-VAE: geometry, encode/decode round trips, gradients, save/load, fingerprints, errors."""

from __future__ import annotations

import pytest
import torch

import latentar
from latentar.data import TensorImageDataset
from latentar.evaluation import evaluate_vqvae
from latentar.quantizers import CodeUsage
from latentar.vqvae import VQVAE, VQVAEConfig, psnr


def images(n: int = 3, shape=(1, 8, 8), levels: int = 256, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, (n, *shape), dtype=torch.uint8, generator=g)


def trained(model: VQVAE, steps: int = 2) -> VQVAE:
    """A few training steps, so the k-means init and the EMA have moved the codebooks."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        loss, _ = model.loss(images(4, model.image_shape, model.levels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


@pytest.mark.parametrize("size, downsample, grid", [(28, 2, 7), (32, 2, 8), (64, 2, 16), (32, 3, 4)])
def test_grid_is_image_over_two_to_the_n(size, downsample, grid):
    model = VQVAE((1, size, size), preset="tiny", downsample=downsample)
    assert model.grid_shapes == {"codes": (grid, grid)}
    codes = model.encode(images(2, (1, size, size)))
    assert codes.shape == (2, grid, grid) and codes.dtype == torch.long


def test_flat_encode_decode_shapes_and_dtypes():
    model = trained(VQVAE((3, 8, 8), preset="tiny", codebook_size=16))
    x = images(5, (3, 8, 8))
    codes = model.encode(x)
    assert codes.shape == (5, 4, 4) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < 16
    out = model.decode_codes(codes)
    assert out.shape == (5, 3, 8, 8) and out.dtype == torch.uint8
    assert torch.equal(out, model.reconstruct(x)), "decode_codes(encode(x)) is the reconstruction"
    assert torch.equal(model.decode_codes(codes[:, None]), out), "(B, 1, h, w) from a prior works too"


def test_hierarchical_encode_decode_shapes_and_dtypes():
    model = trained(VQVAE((1, 16, 16), preset="tiny", hierarchical=True, top_codebook_size=5))
    assert model.grid_shapes == {"bottom": (8, 8), "top": (4, 4)}
    assert model.codebook_sizes == {"bottom": 8, "top": 5}
    x = images(3, (1, 16, 16))
    codes = model.encode(x)
    assert set(codes) == {"bottom", "top"}
    assert codes["bottom"].shape == (3, 8, 8) and codes["top"].shape == (3, 4, 4)
    assert codes["top"].dtype == torch.long and codes["top"].max() < 5
    out = model.decode_codes(codes)
    assert out.shape == (3, 1, 16, 16) and out.dtype == torch.uint8
    assert torch.equal(out, model.reconstruct(x))
    other = dict(codes, top=(codes["top"] + 1) % 5)
    assert not torch.equal(model.decode_codes(other), out), "the decoder uses the top codes"


def test_gradient_reaches_every_trainable_weight():
    for hierarchical in (False, True):
        model = VQVAE((1, 8, 8), preset="tiny", hierarchical=hierarchical, downsample=1)
        loss, metrics = model.loss(images(4))
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
        assert not missing, f"no gradient for {missing}"
        assert metrics["psnr"] == pytest.approx(psnr(metrics["mse"]))


def test_training_lowers_the_reconstruction_error():
    torch.manual_seed(0)
    model = VQVAE((1, 8, 8), preset="tiny", hidden=16, res_hidden=8)
    cells = images(8, (1, 4, 4), levels=2) * 255  # each 2×2 block black or white: one code apiece
    x = cells.repeat_interleave(2, 2).repeat_interleave(2, 3)  # (8, 1, 8, 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        loss, metrics = model.loss(x)
        first = metrics["mse"] if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert metrics["mse"] < 0.3 * first  # about 0.03-0.1 × over seeds 0-3


def test_encode_keeps_the_mode_and_the_codebook():
    model = VQVAE((1, 8, 8), preset="tiny").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.encode(images())
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("hierarchical", [False, True])
def test_save_load_round_trip_gives_identical_codes(tmp_path, hierarchical):
    model = trained(VQVAE((1, 8, 8), preset="tiny", hierarchical=hierarchical, downsample=1,
                          codebook_update="loss"))
    model.save(tmp_path / "vq")
    loaded = latentar.load(tmp_path / "vq")
    assert isinstance(loaded, VQVAE) and loaded.config == model.config
    assert loaded.fingerprint() == model.fingerprint()
    x = images(4)
    a, b = model.encode(x), loaded.encode(x)
    a, b = (a, b) if hierarchical else ({"codes": a}, {"codes": b})
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(model.reconstruct(x), loaded.reconstruct(x))
    assert VQVAE.from_pretrained(tmp_path / "vq").fingerprint() == model.fingerprint()


def test_fingerprint_names_config_and_weights():
    model = VQVAE((1, 8, 8), preset="tiny")
    same = VQVAE.from_config(model.config_dict())
    same.load_state_dict(model.state_dict())
    assert same.fingerprint() == model.fingerprint() and len(model.fingerprint()) == 16
    assert trained(same, 1).fingerprint() != model.fingerprint(), "weights change the fingerprint"
    other = VQVAE((1, 8, 8), preset="tiny", beta=0.5)
    other.load_state_dict(model.state_dict())
    assert other.fingerprint() != model.fingerprint(), "the config changes the fingerprint"


def test_binary_images_use_two_levels():
    model = VQVAE((1, 8, 8), preset="tiny", levels=2)
    x = images(levels=2)
    assert set(model.reconstruct(x).unique().tolist()) <= {0, 1}
    assert torch.equal(model.to_float(x), x.float() * 2 - 1)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        model.encode(torch.full((1, 1, 8, 8), 2, dtype=torch.uint8))


def test_bad_inputs_are_named():
    model = VQVAE((1, 8, 8), preset="tiny")
    with pytest.raises(TypeError, match="uint8"):
        model.encode(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\)"):
        model.encode(images(2, (1, 16, 16)))
    with pytest.raises(ValueError, match=r"^codes must have shape \(B, 4, 4\)"):
        model.decode_codes(torch.zeros(2, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        model.decode_codes(torch.full((2, 4, 4), 8))
    with pytest.raises(TypeError, match="flat"):
        model.decode_codes({"bottom": torch.zeros(1, 4, 4, dtype=torch.long)})
    deep = VQVAE((1, 8, 8), preset="tiny", hierarchical=True)
    with pytest.raises(TypeError, match="hierarchical"):
        deep.decode_codes(torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible by 2"):
        VQVAE((1, 28, 28), downsample=3)
    with pytest.raises(ValueError, match="divisible by 2"):
        VQVAE((1, 28, 28), downsample=2, hierarchical=True)
    with pytest.raises(ValueError, match="unknown VQ-VAE preset"):
        VQVAE((1, 8, 8), preset="huge")
    with pytest.raises(TypeError, match="unknown VQ-VAE field"):
        VQVAE((1, 8, 8), codebook_sise=8)
    with pytest.raises(TypeError, match="either config"):
        VQVAE((1, 8, 8), VQVAEConfig(), preset="tiny")
    with pytest.raises(ValueError, match="codebook_update"):
        VQVAEConfig(codebook_update="adam")


@pytest.mark.parametrize("hierarchical", [False, True])
def test_evaluation_sums_over_the_whole_split(hierarchical):
    model = trained(VQVAE((1, 8, 8), preset="tiny", hierarchical=hierarchical, downsample=1))
    data = TensorImageDataset(images(7), torch.zeros(7, dtype=torch.long), num_classes=1)
    scores = evaluate_vqvae(model, data, batch_size=3)  # batches of 3, 3 and 1
    assert scores == pytest.approx(evaluate_vqvae(model, data, batch_size=7))
    with torch.no_grad():
        recon = model.eval()(data.images)[0]
    mse = (recon - model.to_float(data.images)).pow(2).mean().item()
    assert scores["mse"] == pytest.approx(mse) and scores["psnr"] == pytest.approx(psnr(mse))
    assert scores["count"] == 7
    codes = model.encode(data.images)
    for level, grid in (codes.items() if hierarchical else [("codes", codes)]):
        usage = CodeUsage(model.codebook_sizes[level])
        usage.update(grid)
        prefix = "" if level == "codes" else f"{level}_"
        assert scores[f"{prefix}perplexity"] == pytest.approx(usage.perplexity())
        assert scores[f"{prefix}codes_used"] == grid.unique().numel() / model.codebook_sizes[level]

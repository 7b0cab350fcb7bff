"""Image GPT's colour palette: the k-means fit, nearest-colour tokens, decoding, its scores as a
tokenizer (PSNR like the VQ-VAE's), saving and loading, and the errors it raises."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

import latentar
from latentar.evaluation import evaluate_vqvae
from latentar.vqvae import Palette, psnr


def images_of(colors: torch.Tensor, n: int = 20, size: int = 4, seed: int = 0) -> torch.Tensor:
    """n images (n, C, size, size) whose pixels are drawn from the rows of ``colors`` uint8 (K, C)."""
    picks = torch.randint(0, len(colors), (n, size, size), generator=torch.Generator().manual_seed(seed))
    return colors[picks].permute(0, 3, 1, 2).contiguous()


COLORS = torch.tensor([[250, 10, 10], [10, 250, 10], [10, 10, 250], [128, 128, 128], [0, 0, 0], [255, 255, 255]],
                      dtype=torch.uint8)


def test_a_palette_of_the_images_own_colours_is_lossless():
    x = images_of(COLORS)
    palette = latentar.Palette(num_colors=6).fit(x)
    assert palette.image_shape == (3, 4, 4) and palette.colors.shape == (6, 3)
    found = palette.colors.round().to(torch.uint8)
    assert sorted(found.tolist()) == sorted(COLORS.tolist())
    assert bool((found.float().mean(1).diff() >= 0).all()), "colours sorted by brightness"
    codes = palette.encode(x)
    assert codes.shape == (20, 4, 4) and codes.dtype == torch.long
    assert torch.equal(palette.decode_codes(codes), x)
    assert torch.equal(palette.decode_codes(codes[:, None]), x)  # the (B, 1, H, W) grids priors sample
    scores = evaluate_vqvae(palette, TensorDataset(x, torch.zeros(20)))
    assert scores["psnr"] == float("inf") and scores["codes_used"] == 1.0


def test_tokens_are_the_nearest_colour_and_psnr_is_the_vqvaes():
    x = torch.randint(0, 256, (12, 3, 5, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    palette = Palette(num_colors=8, kmeans_iters=3).fit(x)
    pixels = x.permute(0, 2, 3, 1).reshape(-1, 1, 3).float()  # (N, 1, C)
    distances = (pixels - palette.colors[None]).pow(2).sum(-1)  # (N, K)
    assert torch.equal(palette.encode(x).flatten(), distances.argmin(1))
    recon = palette.decode_codes(palette.encode(x))
    mse = ((recon.float() - x.float()) * (2 / 255)).pow(2).mean().item()  # in the [-1, 1] scale
    scores = evaluate_vqvae(palette, TensorDataset(x, torch.zeros(12)), batch_size=5)
    assert scores["mse"] == pytest.approx(mse) and scores["psnr"] == pytest.approx(psnr(mse))
    assert torch.equal(palette.reconstruct(x), recon)


def test_a_grayscale_palette_is_sorted_and_the_fit_is_seeded():
    x = torch.randint(0, 256, (30, 1, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    a, b = (Palette(num_colors=16, fit_pixels=500).fit(x) for _ in range(2))
    assert torch.equal(a.colors, b.colors) and bool((a.colors[1:, 0] > a.colors[:-1, 0]).all())
    c = Palette(num_colors=16, fit_pixels=500, seed=1).fit(x)
    assert not torch.equal(a.colors, c.colors)


def test_save_and_load(tmp_path):
    x = images_of(COLORS, seed=3)
    palette = Palette(num_colors=5, kmeans_iters=2).fit(x)
    palette.save(tmp_path / "palette")
    loaded = latentar.load(tmp_path / "palette")
    assert type(loaded) is Palette and loaded.config == palette.config and loaded.image_shape == (3, 4, 4)
    assert loaded.fingerprint() == palette.fingerprint() and torch.equal(loaded.encode(x), palette.encode(x))
    assert Palette.from_pretrained(tmp_path / "palette").codebook_sizes == {"codes": 5}


def test_bad_input_names_the_problem(tmp_path):
    x = images_of(COLORS)
    with pytest.raises(ValueError, match="not fitted yet: call palette.fit"):
        Palette(num_colors=4).encode(x)
    with pytest.raises(ValueError, match="not fitted yet"):
        Palette(num_colors=4).save(tmp_path / "p")
    with pytest.raises(ValueError, match="hold 6 distinct colours, fewer than palette.num_colors = 8"):
        Palette(num_colors=8).fit(x)
    with pytest.raises(TypeError, match="fits uint8 images"):
        Palette(num_colors=4).fit(x.float())
    with pytest.raises(ValueError, match=r"palette.num_colors must be an integer in \[2, 65536\]"):
        Palette(num_colors=1)
    palette = Palette(num_colors=4).fit(x)
    with pytest.raises(TypeError, match="uint8"):
        palette.encode(x.float())
    with pytest.raises(ValueError, match=r"shape \(B, 3, 4, 4\)"):
        palette.encode(x[:, :1])
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 4\), got values from 0 to 4"):
        palette.decode_codes(torch.tensor([0, 4]).repeat(8).view(1, 4, 4))
    with pytest.raises(ValueError, match=r"tokens must have shape \(B, 4, 4\)"):
        palette.decode_codes(torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor"):
        palette.decode_codes(torch.zeros(2, 4, 4))


def test_the_model_card_says_what_its_tokens_are_scored_in():
    from latentar.model_card import model_card

    palette = Palette(num_colors=5).fit(images_of(COLORS))
    card = str(model_card(palette, dataset="cifar10"))
    assert "# Colour palette for 3×4×4 images" in card and "fitted to `cifar10`: 5 colours" in card
    assert "nats (bits) per palette token, not comparable with 8-bit bits/dim" in card
    assert f"`{palette.fingerprint()}`" in card and "latentar encode --vqvae" in card

"""Generation: the completion loop's conditional distribution, the prior→decoder chain,
class grids and PNG output."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from prior_cases import every_grid, tiny_prior

import latentar
from latentar.generation import class_rows, complete, completion_grid, generate
from latentar.images import save_grid, save_individual
from latentar.registry import PRIORS

# a composite (``Prior.composite``) draws its auxiliary first and completes no region of x
NAMES = [name for name in latentar.list_priors() if not PRIORS.get(name).composite]


def grid_index(x: torch.Tensor, K: int) -> torch.Tensor:
    """long (N, C, H, W) -> index of each grid in `every_grid` order (N,)."""
    digits = x[0].numel()
    return (x.flatten(1) * K ** torch.arange(digits - 1, -1, -1)).sum(1)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(1, 2, 2), (3, 2, 1)], ids=["C1", "C3"])
def test_redraw_draws_the_rest_from_the_conditional(name, shape):
    """Kept rows never change; the redrawn rows follow p(rest | kept rows) by brute force."""
    K, n = 2, 4000
    prior = tiny_prior(name, shape, K)
    grids = every_grid(shape, K)
    with torch.no_grad():
        p = prior.log_prob(grids).exp()  # (M,)
    kept = grids[-1:, :, :1]  # the first row of the last grid: all ones
    x = torch.zeros(n, *shape, dtype=torch.long)
    x[:, :, :1] = kept
    out = prior.redraw(x, 1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :, :1], x[:, :, :1])
    match = (grids[:, :, :1] == kept).flatten(1).all(1)  # grids that keep the row
    target = torch.where(match, p, torch.zeros_like(p))
    target = target / target.sum()
    freq = torch.bincount(grid_index(out, K), minlength=len(grids)).float() / n
    tv = 0.5 * (freq - target).abs().sum().item()
    assert tv < 1.5 * math.sqrt(int(match.sum()) / n), f"total variation {tv:.3f}"


def test_redraw_checks_its_arguments():
    prior = tiny_prior("pixelcnn", (1, 3, 3), 4)
    with pytest.raises(ValueError, match=r"start_row must be an integer in \[0, 3\], got 4"):
        prior.redraw(torch.zeros(1, 1, 3, 3, dtype=torch.long), 4)
    with pytest.raises(ValueError, match=r"start_row must be an integer in \[0, 3\], got 1.5"):
        prior.redraw(torch.zeros(1, 1, 3, 3, dtype=torch.long), 1.5)
    with pytest.raises(ValueError, match=r"shape \(B, 1, 3, 3\)"):
        prior.redraw(torch.zeros(1, 1, 2, 3, dtype=torch.long), 1)


def test_redraw_of_a_narrow_dtype_returns_long_draws_beyond_its_range():
    prior = tiny_prior("pixelcnn", (1, 2, 2), 300)  # symbols up to 299 do not fit in uint8
    torch.manual_seed(0)
    out = prior.redraw(torch.zeros(64, 1, 2, 2, dtype=torch.uint8), 0, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.long and int(out.max()) >= 256


@pytest.mark.parametrize("n", [0, -1, 2.5, True, "3"])
def test_every_sampler_refuses_a_bad_number_of_grids(n):
    prior = tiny_prior("pixelcnn", (1, 2, 2), 2)  # pixelcnn has a fast stepper of its own
    for sample in (prior.sample, prior.naive_sample, lambda n: generate(prior, n=n)):
        with pytest.raises(ValueError, match=rf"n \(the number of grids to draw\) must be an integer >= 1, "
                                             rf"got {n!r}"):
            sample(n)


@pytest.mark.parametrize("knobs, message", [
    ({"temperature": float("nan")}, r"temperature must be a finite number > 0, got nan"),
    ({"temperature": float("inf")}, r"temperature must be a finite number > 0, got inf"),
    ({"temperature": 0.0}, r"temperature must be a finite number > 0, got 0.0"),
    ({"temperature": -1}, r"temperature must be a finite number > 0, got -1"),
    ({"top_k": 0}, r"top_k must be an integer >= 1 or None, got 0"),
    ({"top_k": 2.5}, r"top_k must be an integer >= 1 or None, got 2.5"),
])
@pytest.mark.parametrize("name", ["pixelcnn", "row_lstm"])  # two kinds of fast stepper
def test_every_sampler_refuses_bad_knobs(name, knobs, message):
    prior = tiny_prior(name, (1, 2, 2), 2)
    for sample in (prior.sample, prior.naive_sample):
        with pytest.raises(ValueError, match=message):
            sample(2, **knobs)
    with pytest.raises(ValueError, match=message):
        prior.redraw(torch.zeros(1, 1, 2, 2, dtype=torch.long), 1, **knobs)


def test_top_k_of_at_least_k_keeps_every_symbol():
    prior = tiny_prior("pixelcnn", (1, 2, 2), 3)
    draw = lambda top_k: prior.sample(8, top_k=top_k, generator=torch.Generator().manual_seed(1))  # noqa: E731
    assert torch.equal(draw(3), draw(None)) and torch.equal(draw(50), draw(None))


def test_labels_must_be_integers_of_one_class_per_grid():
    prior = tiny_prior("pixelcnn", (1, 2, 2), 2, num_classes=3)
    x = torch.zeros(2, 1, 2, 2, dtype=torch.long)
    for labels, error, message in [
            (torch.tensor([0.0, 1.0]), TypeError, r"labels must be an integer tensor \(2,\) of classes, "
                                                 r"got a torch.float32 tensor"),
            (torch.tensor([True, False]), TypeError, r"got a torch.bool tensor"),
            ([0, 1], TypeError, r"labels must be an integer tensor \(2,\) of classes, got a list"),
            (torch.tensor([0, 3]), ValueError, r"labels must lie in \[0, 3\), got \[0, 3\]")]:
        with pytest.raises(error, match=message):
            prior.log_prob(x, {"labels": labels})
        with pytest.raises(error, match=message):
            generate(prior, n=2, labels=labels)
    with pytest.raises(TypeError, match="cond must be None"):
        prior.sample(2, True)  # a bool is no class
    assert torch.equal(prior.log_prob(x, torch.tensor([0, 2], dtype=torch.int32)),
                       prior.log_prob(x, torch.tensor([0, 2])))


def test_generate_pixel_mode_is_reproducible_and_class_rows_condition():
    prior = tiny_prior("pixelcnn", (1, 4, 4), 2, num_classes=3)
    labels = class_rows(3, 2)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    a = generate(prior, n=6, labels=labels, seed=3)
    b = generate(prior, n=6, labels=labels, seed=3)
    assert a.images.dtype == torch.uint8 and a.images.shape == (6, 1, 4, 4)
    assert torch.equal(a.images, b.images) and int(a.images.max()) <= 1
    assert torch.equal(a.symbols[0], a.images.long())
    with pytest.raises(ValueError, match="class-conditional"):
        generate(prior, n=2)
    with pytest.raises(ValueError, match=r"class must lie in \[0, 3\), got 5"):
        generate(prior, n=2, labels=5)
    with pytest.raises(ValueError, match="models pixels; it takes no VQ-VAE"):
        generate(prior, vqvae=object(), n=2, labels=0)


def test_code_prior_without_vqvae_is_an_error():
    prior = tiny_prior("pixelcnn", (1, 3, 3), 8, symbols="codes", embed_dim=4)
    with pytest.raises(ValueError, match="models codes; pass the VQ-VAE"):
        generate(prior, n=2)


def test_completion_keeps_rows_and_draws_each_row(tmp_path):
    prior = tiny_prior("pixelcnn", (1, 6, 5), 2)
    images = torch.randint(0, 2, (3, 1, 6, 5), dtype=torch.uint8)
    result = complete(prior, images, keep_rows=2, samples=4, seed=0)
    assert result.completions.shape == (3, 4, 1, 6, 5)
    kept = result.completions[:, :, :, :2]
    assert torch.equal(kept, images[:, None, :, :2].expand_as(kept))
    assert torch.equal(result.originals, images)
    assert result.shown[:, :, :2].all() and not result.shown[:, :, 2:].any()
    grid, nrow = completion_grid(result, levels=2)  # the input with its hidden rows gray, on a 0/255 scale
    occluded = grid[::nrow]  # (3, 1, 6, 5)
    assert torch.equal(occluded[:, :, :2], images[:, :, :2] * 255) and (occluded[:, :, 2:] == 128).all()
    assert nrow == 6 and grid.shape == (18, 1, 6, 5) and torch.equal(grid[nrow - 1::nrow], images * 255)
    path = save_grid(grid, tmp_path / "c.png", nrow=nrow)
    with Image.open(path) as png:
        assert png.size == (6 * (5 + 2) + 2, 3 * (6 + 2) + 2)
        assert set(np.unique(np.asarray(png.convert("L")))) <= {0, 128, 255}
    with pytest.raises(ValueError, match=r"keep_rows must lie in \[0, 6\] \(pixel rows\), got 7"):
        complete(prior, images, keep_rows=7)


def test_save_individual_writes_one_png_per_image(tmp_path):
    images = torch.randint(0, 256, (3, 3, 4, 5), dtype=torch.uint8)
    paths = save_individual(images, tmp_path / "each")
    assert [p.name for p in paths] == ["00000.png", "00001.png", "00002.png"]
    with Image.open(paths[1]) as png:
        assert png.size == (5, 4)
        assert torch.equal(torch.from_numpy(np.array(png)), images[1].permute(1, 2, 0))


def test_generate_decodes_codes_and_checks_the_vqvae():
    from latentar.vqvae import VQVAE

    torch.manual_seed(0)
    vqvae = VQVAE((3, 8, 8), preset="tiny").eval()  # 4×4 grids of 8 codes
    prior = tiny_prior("pixelcnn", (1, 4, 4), 8, symbols="codes", embed_dim=4)
    drawn = generate(prior, vqvae, n=5, seed=1)
    assert drawn.images.shape == (5, 3, 8, 8) and drawn.images.dtype == torch.uint8
    assert torch.equal(drawn.images, vqvae.decode_codes(drawn.symbols[0][:, 0]))
    wrong = tiny_prior("pixelcnn", (1, 4, 4), 9, symbols="codes", embed_dim=4)
    with pytest.raises(ValueError, match=r"models grids \(1, 4, 4\) of 9 symbols, but the VQ-VAE makes "
                                         r"\(1, 4, 4\) grids of 8 codes"):
        generate(wrong, vqvae, n=2)


def test_generate_chains_top_and_bottom_priors_of_a_hierarchical_vqvae():
    from latentar.vqvae import VQVAE

    torch.manual_seed(0)
    vqvae = VQVAE((3, 8, 8), preset="tiny", hierarchical=True).eval()  # top 2×2, bottom 4×4
    top = tiny_prior("pixelsnail", (1, 2, 2), 8, symbols="codes", embed_dim=4)
    bottom = tiny_prior("pixelsnail", (1, 4, 4), 8, symbols="codes", embed_dim=4, context_symbols=8,
                        context_shape=(2, 2))
    drawn = generate(top, vqvae, n=3, seed=0, bottom_prior=bottom)
    top_codes, bottom_codes = drawn.symbols
    assert top_codes.shape == (3, 1, 2, 2) and bottom_codes.shape == (3, 1, 4, 4)
    decoded = vqvae.decode_codes({"top": top_codes[:, 0], "bottom": bottom_codes[:, 0]})
    assert torch.equal(drawn.images, decoded)
    again = generate(top, vqvae, n=3, seed=0, bottom_prior=bottom)
    assert torch.equal(again.images, drawn.images)
    with pytest.raises(ValueError, match=r"speaks 2 code grid\(s\).* but 1 prior\(s\)"):
        generate(top, vqvae, n=2)


def test_the_old_sampling_imports_still_work(tmp_path):
    from latentar import sampling
    from latentar.generation import generate

    assert sampling.generate is generate
    sampling.save_grid(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), tmp_path / "g.png", nrow=2)
    assert (tmp_path / "g.png").is_file()

"""Generation: prior samples decoded to images, class grids, image completion, and the
VQ-VAE's reconstruction grids.

The chain needs no encoder: a prior draws symbol grids, and in code mode the VQ-VAE's
decoder turns them into images. Pixel-mode priors draw the images themselves.

    images = generate(prior, vqvae, n=64, temperature=0.9, top_k=50, seed=0).images
    save_grid(images, "grid.png", nrow=8)

Completion (the PixelRNN paper's occlusion figure) keeps the top rows of real images
(pixel rows in pixel mode, code rows in code mode) and redraws the rest with `Prior.redraw`,
which runs the generic raster-order loop from a given row on. It relies only on the
prior's teacher-forced ``forward`` being causal, so it is exact for every prior,
including those whose ``sample`` is a fast override.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
from einops import rearrange, repeat
from PIL import Image

from latentar.checks import SEED, check_value
from latentar.files import atomic_write
from latentar.memory import batch_that_fits, check_fits, format_size, tensor_bytes
from latentar.priors.base import Prior, check_num_samples, is_integer
from latentar.priors.condition import Condition, as_condition, check_labels
from latentar.priors.footprint import grid_bytes


class Generation(NamedTuple):
    images: torch.Tensor  # uint8 (n, C, H, W), in the data's levels (0/1 when binarized)
    symbols: tuple[torch.Tensor, ...]  # what the priors drew: (n, C, h, w) each; top first


class Completion(NamedTuple):
    occluded: torch.Tensor  # uint8 (n, C, H, W): kept rows, the rest gray (0 when binary)
    completions: torch.Tensor  # uint8 (n, S, C, H, W)
    originals: torch.Tensor  # uint8 (n, C, H, W)


def make_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A generator on ``device`` seeded with ``seed``, an integer in ``SEED``'s range (None: no generator)."""
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(check_value(seed, int, "seed", SEED))


def expand_labels(prior: Prior, n: int, labels: int | torch.Tensor | None) -> torch.Tensor | None:
    """Labels for n draws (one int class, or an integer tensor (n,)) -> long (n,) or None;
    an error if they do not suit the prior."""
    num_classes = prior.spec.num_classes
    if num_classes is None:
        if labels is not None:
            raise ValueError("this prior is unconditional; it takes no class label")
        return None
    if labels is None:
        raise ValueError(f"this prior is class-conditional ({num_classes} classes): pass a class in "
                         f"[0, {num_classes}) or one label per image")
    if is_integer(labels):
        if not 0 <= labels < num_classes:
            raise ValueError(f"class must lie in [0, {num_classes}), got {labels}")
    else:
        check_labels(labels, num_classes, n)
    return as_condition(labels, n=n).labels.long()


def class_rows(num_classes: int, per_class: int) -> torch.Tensor:
    """Labels for a grid with one row per class -> long (num_classes · per_class,)."""
    return repeat(torch.arange(num_classes), "k -> (k n)", n=per_class)


def check_pair(prior: Prior, vqvae: Any | None, bottom_prior: Prior | None = None) -> None:
    """Check that the prior(s) model what the VQ-VAE speaks (or pixels, without one)."""
    if vqvae is None:
        if prior.spec.symbols != "pixels":
            raise ValueError("this prior models codes; pass the VQ-VAE that made them (--vqvae DIR)")
        if bottom_prior is not None:
            raise ValueError("a bottom prior needs the hierarchical VQ-VAE it was trained on")
        return
    if prior.spec.symbols != "codes":
        raise ValueError("this prior models pixels; it takes no VQ-VAE")
    grids = code_grids(vqvae)
    priors = [prior] if bottom_prior is None else [prior, bottom_prior]
    if len(priors) != len(grids):
        raise ValueError(f"the VQ-VAE speaks {len(grids)} code grid(s) {grids} but {len(priors)} "
                         f"prior(s) were given (a hierarchical VQ-VAE needs a top and a bottom prior)")
    for which, p, (K, shape) in zip(("top", "bottom"), priors, grids):
        if p.spec.num_symbols != K or p.spec.shape[1:] != shape or p.spec.shape[0] != 1:
            raise ValueError(f"the {which + ' ' if len(priors) > 1 else ''}prior models grids "
                             f"{p.spec.shape} of {p.spec.num_symbols} symbols, but the VQ-VAE "
                             f"makes (1, {shape[0]}, {shape[1]}) grids of {K} codes")
    if bottom_prior is not None and (bottom_prior.spec.context_shape != grids[0][1]
                                     or bottom_prior.spec.context_symbols != grids[0][0]):
        raise ValueError(f"the bottom prior takes a context {bottom_prior.spec.context_shape} of "
                         f"{bottom_prior.spec.context_symbols} symbols, but the top codes are "
                         f"{grids[0][1]} of {grids[0][0]}")


def code_levels(vqvae: Any) -> list[str]:
    """The VQ-VAE's code levels in the order priors draw them: top first."""
    return [level for level in ("codes", "top", "bottom") if level in vqvae.grid_shapes]


def code_grids(vqvae: Any) -> list[tuple[int, tuple[int, int]]]:
    """[(K, (h, w))] of each code grid the VQ-VAE makes, top first."""
    return [(vqvae.codebook_sizes[k], tuple(vqvae.grid_shapes[k])) for k in code_levels(vqvae)]


def decode(vqvae: Any | None, symbols: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Prior draws, top first, each long (n, 1, h, w) -> uint8 images (n, C, H, W).

    Without a VQ-VAE the draws are the pixels themselves. The VQ-VAE decodes in batches of
    as many images as fit the memory cap (``VQVAE.memory_floor`` per image), in order.
    """
    if vqvae is None:
        return symbols[0].to(torch.uint8)
    n, (per_image, made_of) = len(symbols[0]), vqvae.memory_floor()
    check_fits(per_image, "decoding one image", vqvae.device, made_of)
    batch = batch_that_fits(per_image, device=vqvae.device)
    images = torch.empty(n, *vqvae.image_shape, dtype=torch.uint8)  # (n, C, H, W)
    for start in range(0, n, batch):
        codes = dict(zip(code_levels(vqvae), (s[start:start + batch] for s in symbols)))
        images[start:start + batch] = vqvae.decode_codes(codes["codes"] if "codes" in codes else codes).cpu()
    return images


def check_output(n: int, priors: list[Any], image_shape: tuple[int, int, int], what: str,
                 device: torch.device | str | None = None) -> None:
    """Refuse (``MemoryCapError`` naming ``what``, the setting as the user wrote it) n draws
    whose output cannot fit the memory cap next to the work of drawing one grid: the grids
    each of ``priors`` draws, int64 (C, h, w), and the images uint8 ``image_shape``
    (decoded, or the pixels themselves), n of each. The priors may live on the meta device."""
    output = n * (sum(grid_bytes(p.spec) for p in priors) + tensor_bytes(image_shape, torch.uint8))
    work = max(p.memory_floor()[0] for p in priors)
    grids = " + ".join(f"a grid {tuple(p.spec.shape)}" for p in priors)
    check_fits(output + work, what, device, f"{n} × ({grids} of int64 symbols and an image {tuple(image_shape)} "
                                            f"of uint8): {format_size(output)}, and {format_size(work)} to draw one")


def check_generation(prior: Prior, vqvae: Any | None, n: int, bottom_prior: Prior | None = None,
                     what: str | None = None) -> None:
    """`check_output` of what `generate` hands back for n draws: the grids of the prior (and the
    bottom prior) and the images (decoded by the VQ-VAE, or the pixels); ``what`` names the
    setting (default ``generate(n=...)``)."""
    priors = [prior] if bottom_prior is None else [prior, bottom_prior]
    image_shape = prior.spec.shape if vqvae is None else vqvae.image_shape
    check_output(n, priors, image_shape, what or f"generate(n={n})", prior.device)


@torch.no_grad()
def generate(prior: Prior, vqvae: Any | None = None, n: int = 64, labels: int | torch.Tensor | None = None,
             *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             cfg_scale: float = 1.0, seed: int | None = 0, bottom_prior: Prior | None = None) -> Generation:
    """Draw n images: prior samples, decoded by the VQ-VAE when there is one.

    With ``bottom_prior`` (VQ-VAE-2), ``prior`` draws the top codes and the bottom
    prior draws the bottom codes given them as its spatial context. The knobs are
    ``Prior.sample``'s (``latentar.priors.engine``); ``cfg_scale`` guides both priors.

    Memory: n draws whose grids and images cannot fit the memory cap (``check_generation``) raise
    a ``MemoryCapError`` naming n before anything is drawn; below that, each prior draws and
    the VQ-VAE decodes in batches that fit (``Prior.draw_in_batches``, ``decode``).
    """
    n = check_num_samples(n)
    check_pair(prior, vqvae, bottom_prior)
    check_generation(prior, vqvae, n, bottom_prior)
    labels = expand_labels(prior, n, labels)
    generator = make_generator(seed, prior.device)
    draw = dict(temperature=temperature, top_k=top_k, top_p=top_p, cfg_scale=cfg_scale, generator=generator)
    symbols = (prior.sample(n, Condition(labels), **draw),)  # (n, C, h, w)
    if bottom_prior is not None:
        context = rearrange(symbols[0], "n 1 h w -> n h w")
        bottom_labels = expand_labels(bottom_prior, n, labels)
        symbols += (bottom_prior.sample(n, Condition(bottom_labels, context), **draw),)
    symbols = tuple(s.cpu() for s in symbols)
    return Generation(decode(vqvae, symbols), symbols)


@torch.no_grad()
def complete(prior: Prior, images: torch.Tensor, keep_rows: int, samples: int = 4, *,
             vqvae: Any | None = None, labels: torch.Tensor | None = None, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, cfg_scale: float = 1.0,
             seed: int | None = 0) -> Completion:
    """Keep the top ``keep_rows`` rows of images uint8 (n, C, H, W), draw the rest ``samples`` times.

    Rows are pixel rows in pixel mode and code rows in code mode (then the occluded
    input shows the image rows those code rows cover).
    """
    check_pair(prior, vqvae)
    n, S = len(images), samples
    H_sym = prior.spec.shape[1]
    if not 0 <= keep_rows <= H_sym:
        raise ValueError(f"keep_rows must lie in [0, {H_sym}] ({'code' if vqvae else 'pixel'} rows), "
                         f"got {keep_rows}")
    if S < 1:
        raise ValueError(f"samples must be >= 1, got {S}")
    check_output(n * S, [prior], images.shape[1:], f"completing {n} images × samples={S}", prior.device)
    if vqvae is None:
        x = images.long()  # (n, C, H, W)
    else:
        if vqvae.config.hierarchical:
            raise ValueError("completion works on one code grid; this VQ-VAE is hierarchical")
        x = rearrange(vqvae.encode(images), "n h w -> n 1 h w").cpu()  # (n, 1, h, w)
    labels = expand_labels(prior, n, labels)
    x = repeat(x, "n c h w -> (n s) c h w", s=S)
    labels = None if labels is None else repeat(labels, "n -> (n s)", s=S)
    cond = as_condition(labels, device=prior.device)
    drawn = prior.redraw(x, keep_rows, cond, temperature=temperature, top_k=top_k, top_p=top_p,
                         cfg_scale=cfg_scale, generator=make_generator(seed, prior.device)).cpu()  # (n·S, C, h, w)
    completions = rearrange(decode(vqvae, (drawn,)), "(n s) c h w -> n s c h w", s=S)
    occluded = images.clone()
    image_rows = keep_rows * images.shape[2] // H_sym
    levels = 256 if vqvae is not None else prior.spec.num_symbols
    occluded[:, :, image_rows:] = levels // 2 if levels > 2 else 0  # gray (black when binary): hidden
    return Completion(occluded, completions, images)


def completion_grid(result: Completion) -> tuple[torch.Tensor, int]:
    """One row per image: occluded input, the completions, the original -> (images, nrow)."""
    row = torch.cat([result.occluded[:, None], result.completions, result.originals[:, None]], 1)
    return rearrange(row, "n s c h w -> (n s) c h w"), row.shape[1]


def to_display(images: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """uint8 images with ``levels`` values (2 when binarized) -> uint8 in [0, 255]."""
    if levels == 256:
        return images
    return (images.float() * (255 / (levels - 1))).round().to(torch.uint8)


def image_grid(images: torch.Tensor, nrow: int = 8, levels: int = 256) -> torch.Tensor:
    """uint8 images (N, C, H, W) with ``levels`` values -> one uint8 grid (3, H', W') in [0, 255],
    ``nrow`` images per row on white."""
    from torchvision.utils import make_grid  # torchvision is slow to import; only grids need it

    return make_grid(to_display(images, levels), nrow=check_nrow(nrow), padding=2, pad_value=255)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, levels: int = 256) -> Path:
    """Write uint8 images (N, C, H, W) as one PNG grid with ``nrow`` images per row."""
    path = check_image_path(path)
    return save_image(image_grid(images, nrow, levels), path)


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    """Write one uint8 image (C, H, W), C = 1 or 3, as a PNG (its folder made if needed),
    atomically: a failed write keeps the previous file at ``path`` and raises ``WriteError``."""
    path = Path(path)
    array = rearrange(image.cpu(), "c h w -> h w c").numpy()
    Image.init()
    with atomic_write(path) as f:
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(f, format=image_format(path))
    return path


def sample_preview(vqvae: Any | None = None, *, n: int = 16, nrow: int = 4, seed: int = 0, levels: int = 256,
                   top_prior: Prior | None = None) -> Callable[[Prior], torch.Tensor]:
    """A look at a prior while it trains: ``preview(prior)`` draws n grids with the fast sampler
    and a fixed seed (the same draws at every call of an unchanged prior), decodes them with the
    VQ-VAE in code mode, and returns the grid image uint8 (3, H', W'). A class-conditional prior
    draws rows of one image per class. With ``top_prior`` (VQ-VAE-2) the previewed prior is the
    bottom one, drawing under the top prior's codes."""
    def preview(prior: Prior) -> torch.Tensor:
        labels, per_row = None, nrow
        if prior.spec.num_classes is not None:
            per_row = prior.spec.num_classes
            labels = repeat(torch.arange(per_row), "k -> (r k)", r=max(1, round(n / per_row)))
        top, bottom = (prior, None) if top_prior is None else (top_prior, prior)
        drawn = generate(top, vqvae, n if labels is None else len(labels), labels, seed=seed, bottom_prior=bottom)
        return image_grid(drawn.images, per_row, levels)

    return preview


def reconstruction_preview(originals: torch.Tensor, nrow: int = 8) -> Callable[[Any], torch.Tensor]:
    """A look at a VQ-VAE while it trains: ``preview(vqvae)`` -> the grid image uint8 (3, H', W') of
    `reconstruction_rows` of the fixed images ``originals`` uint8 (n, C, H, W)."""
    return lambda vqvae: image_grid(reconstruction_rows(vqvae, originals, nrow), nrow, vqvae.levels)


def check_image_path(path: str | Path) -> Path:
    """An image file about to be written: its extension names a format PIL writes, it is not
    a folder, and its nearest existing parent is a writable folder. Checked before any work."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected an image file name, e.g. {path / 'grid.png'}")
    Image.init()
    if Image.registered_extensions().get(path.suffix.lower()) not in Image.SAVE:
        got = f"the extension {path.suffix!r}" if path.suffix else "no extension"
        raise ValueError(f"{path}: expected an image file name ending in .png (or .jpg, .bmp, ...), got {got}")
    parent = next(p for p in path.absolute().parents if p.exists())
    if not parent.is_dir():
        raise ValueError(f"cannot write {path}: {parent} is a file, expected a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {path}: the folder {parent} is not writable")
    return path


def image_format(path: Path) -> str:
    """The PIL format that ``path``'s extension names (PNG when it names none)."""
    return Image.registered_extensions().get(path.suffix.lower(), "PNG")


def check_nrow(nrow: Any) -> int:
    """Images per row of a grid: an integer >= 1."""
    if not is_integer(nrow) or nrow < 1:
        raise ValueError(f"nrow (images per grid row) must be an integer >= 1, got {nrow!r}")
    return int(nrow)


def save_individual(images: torch.Tensor, folder: str | Path, levels: int = 256) -> list[Path]:
    """Write each uint8 image (N, C, H, W) as ``folder/00000.png`` ..."""
    return [save_image(image, Path(folder) / f"{i:05d}.png") for i, image in enumerate(to_display(images, levels))]


def first_images(dataset: Any, n: int) -> torch.Tensor:
    """The images of the first ``n`` items (all, when fewer) of a dataset of (uint8 image, ...)
    items -> uint8 (n, C, H, W)."""
    return torch.stack([dataset[i][0] for i in range(min(n, len(dataset)))])


def reconstruction_rows(vqvae: Any, originals: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """uint8 (n, C, H, W) -> (2·r·nrow, C, H, W): r rows of originals, each above a row of
    their VQ-VAE reconstructions (the last row padded with white)."""
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    both = torch.stack([originals, vqvae.reconstruct(originals).cpu()])  # (2, n, C, H, W)
    pad = -originals.shape[0] % nrow
    both = torch.cat([both, both.new_full((2, pad, *both.shape[2:]), vqvae.levels - 1)], 1)
    return rearrange(both, "two (r k) c h w -> (r two k) c h w", k=nrow)


def save_reconstructions(vqvae: Any, originals: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Write `reconstruction_rows` as one PNG grid."""
    return save_grid(reconstruction_rows(vqvae, originals, nrow), path, nrow=nrow, levels=vqvae.levels)

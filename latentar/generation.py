"""Generation: prior samples decoded to images (``generate``), class grids, and image
completion (``complete``).

The chain needs no encoder: a prior draws symbol grids, and in code mode the VQ-VAE's
decoder turns them into images. Pixel-mode priors draw the images themselves.

    images = generate(prior, vqvae, n=64, temperature=0.9, top_k=50, seed=0).images
    save_grid(images, "grid.png", nrow=8)            # latentar.images

Completion (the PixelRNN paper's occlusion figure) keeps a known region of real images (the
top rows, or any mask a prior's orders allow; in pixels in pixel mode, in codes in code mode)
and redraws the rest with `Prior.complete`: the same engine and stepper as ``Prior.sample``,
drawing the unknown positions after the stepper has walked the known ones.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from einops import rearrange, repeat

from latentar.checks import SEED, check_value
from latentar.images import to_display
from latentar.memory import batch_that_fits, check_fits, format_size, tensor_bytes
from latentar.nn.modes import eval_mode
from latentar.priors.base import Prior, check_num_samples, is_integer
from latentar.priors.condition import Condition, as_condition, check_labels
from latentar.priors.footprint import grid_bytes
from latentar.priors.regions import known_masks
from latentar.vqvae import Tokenizer


class Generation(NamedTuple):
    images: torch.Tensor  # uint8 (n, C, H, W), in the data's levels (0/1 when binarized)
    symbols: tuple[torch.Tensor, ...]  # what the priors drew: (n, C, h, w) each; top first


class Completion(NamedTuple):
    shown: torch.Tensor  # bool (n, 1, H, W): the pixels of the known region (in code mode, those its codes cover)
    completions: torch.Tensor  # uint8 (n, S, C, H, W)
    originals: torch.Tensor  # uint8 (n, C, H, W)
    region_nats: torch.Tensor  # (n,) nats of each original's redrawn region given its known part (exact)


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
        check_labels(cast(torch.Tensor, labels), num_classes, n)  # not an integer: a tensor
    expanded = as_condition(labels, n=n).labels
    assert expanded is not None  # labels given: as_condition keeps them
    return expanded.long()


def class_rows(num_classes: int, per_class: int) -> torch.Tensor:
    """Labels for a grid with one row per class -> long (num_classes · per_class,)."""
    return repeat(torch.arange(num_classes), "k -> (k n)", n=per_class)


def check_pair(prior: Prior, vqvae: Tokenizer | None, bottom_prior: Prior | None = None) -> None:
    """Check that the prior(s) model what the VQ-VAE speaks (or pixels, without one)."""
    if vqvae is None:
        if prior.spec.symbols != "pixels":
            raise ValueError("this prior models codes; pass the VQ-VAE that made them (--vqvae DIR)")
        if bottom_prior is not None:
            raise ValueError("a bottom prior needs the hierarchical VQ-VAE it was trained on")
        return
    if prior.spec.symbols != "codes":
        raise ValueError("this prior models pixels; it takes no VQ-VAE")
    grids = vqvae.code_grids
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


def decode(vqvae: Tokenizer | None, symbols: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Prior draws, top first, each long (n, 1, h, w) -> uint8 images (n, C, H, W).

    Without a VQ-VAE the draws are the pixels themselves. The VQ-VAE decodes in batches of
    as many images as fit the memory cap (``Tokenizer.memory_floor`` per image), in order.
    """
    if vqvae is None:
        return symbols[0].to(torch.uint8)
    n, (per_image, made_of) = len(symbols[0]), vqvae.memory_floor()
    check_fits(per_image, "decoding one image", vqvae.device, made_of)
    batch = batch_that_fits(per_image, device=vqvae.device)
    images = torch.empty(n, *vqvae.image_shape, dtype=torch.uint8)  # (n, C, H, W)
    for start in range(0, n, batch):
        codes = dict(zip(vqvae.code_levels, (s[start:start + batch] for s in symbols)))
        images[start:start + batch] = vqvae.decode_codes(codes["codes"] if "codes" in codes else codes).cpu()
    return images


def check_output(n: int, priors: list[Prior], image_shape: tuple[int, ...], what: str,
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


def check_generation(prior: Prior, vqvae: Tokenizer | None, n: int, bottom_prior: Prior | None = None,
                     what: str | None = None) -> None:
    """`check_output` of what `generate` hands back for n draws: the grids of the prior (and the
    bottom prior) and the images (decoded by the VQ-VAE, or the pixels); ``what`` names the
    setting (default ``generate(n=...)``)."""
    priors = [prior] if bottom_prior is None else [prior, bottom_prior]
    image_shape = prior.spec.shape if vqvae is None else vqvae.image_shape
    check_output(n, priors, image_shape, what or f"generate(n={n})", prior.device)


@torch.no_grad()
def generate(prior: Prior, vqvae: Tokenizer | None = None, n: int = 64, labels: int | torch.Tensor | None = None,
             *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             cfg_scale: float = 1.0, seed: int | None = 0, bottom_prior: Prior | None = None,
             batch_size: int | None = None) -> Generation:
    """Draw n images: prior samples, decoded by the VQ-VAE when there is one.

    With ``bottom_prior`` (VQ-VAE-2), ``prior`` draws the top codes and the bottom
    prior draws the bottom codes given them as its spatial context. The knobs are
    ``Prior.sample``'s (``latentar.priors.engine``); ``cfg_scale`` guides both priors.

    Memory: n draws whose grids and images cannot fit the memory cap (``check_generation``) raise
    a ``MemoryCapError`` naming n before anything is drawn; below that, each prior draws and
    the VQ-VAE decodes in batches that fit (``Prior.draw_in_batches``, ``decode``); ``batch_size``
    bounds the grids of one sampler pass further (None: as many as fit).
    """
    n = check_num_samples(n)
    check_pair(prior, vqvae, bottom_prior)
    check_generation(prior, vqvae, n, bottom_prior)
    labels = expand_labels(prior, n, labels)
    generator = make_generator(seed, prior.device)
    draw: dict[str, Any] = dict(temperature=temperature, top_k=top_k, top_p=top_p, cfg_scale=cfg_scale,
                                generator=generator, batch_size=batch_size)
    symbols: tuple[torch.Tensor, ...] = (prior.sample(n, Condition(labels), **draw),)  # (n, C, h, w)
    if bottom_prior is not None:
        context = rearrange(symbols[0], "n 1 h w -> n h w")
        bottom_labels = expand_labels(bottom_prior, n, labels)
        symbols += (bottom_prior.sample(n, Condition(bottom_labels, context), **draw),)
    symbols = tuple(s.cpu() for s in symbols)
    return Generation(decode(vqvae, symbols), symbols)


@torch.no_grad()
def complete(prior: Prior, images: torch.Tensor, keep_rows: int | None = None, samples: int = 4, *,
             known: torch.Tensor | None = None, vqvae: Tokenizer | None = None, labels: torch.Tensor | None = None,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             cfg_scale: float = 1.0, seed: int | None = 0, batch_size: int | None = None) -> Completion:
    """Keep a known region of images uint8 (n, C, H, W), draw the rest ``samples`` times.

    The region is ``keep_rows`` (the top rows) or ``known``, a bool mask (h, w) or (n, h, w)
    over the prior's grid, True where kept (``Prior.complete``): pixels in pixel mode, codes
    in code mode (then the occluded input shows the image pixels those codes cover).
    ``batch_size`` bounds the grids redrawn per pass (None: as many as fit the memory cap).
    """
    check_pair(prior, vqvae)
    n, S = len(images), samples
    _, H_sym, W_sym = prior.spec.shape
    if (keep_rows is None) == (known is None):
        raise ValueError("give the known region as keep_rows (the top rows) or as a known mask, not both")
    if keep_rows is not None:
        if not is_integer(keep_rows) or not 0 <= keep_rows <= H_sym:
            raise ValueError(f"keep_rows must lie in [0, {H_sym}] ({'code' if vqvae else 'pixel'} rows), "
                             f"got {keep_rows}")
        known = (torch.arange(H_sym) < keep_rows)[:, None].expand(H_sym, W_sym)
    masks = known_masks(known, n, H_sym, W_sym)  # (n, h, w)
    if S < 1:
        raise ValueError(f"samples must be >= 1, got {S}")
    check_output(n * S, [prior], images.shape[1:], f"completing {n} images × samples={S}", prior.device)
    if vqvae is None:
        x = images.long()  # (n, C, H, W)
    else:
        if len(vqvae.code_levels) > 1:
            raise ValueError("completion works on one code grid; this VQ-VAE is hierarchical")
        codes = cast(torch.Tensor, vqvae.encode(images))  # one grid: a tensor (n, h, w), not a dict
        x = rearrange(codes, "n h w -> n 1 h w").cpu()  # (n, 1, h, w)
    labels = expand_labels(prior, n, labels)
    x = repeat(x, "n c h w -> (n s) c h w", s=S)
    labels = None if labels is None else repeat(labels, "n -> (n s)", s=S)
    cond = as_condition(labels, device=prior.device)
    drawn = prior.complete(x, repeat(masks, "n h w -> (n s) h w", s=S), cond, temperature=temperature,
                           top_k=top_k, top_p=top_p, cfg_scale=cfg_scale,
                           generator=make_generator(seed, prior.device), batch_size=batch_size).cpu()  # (n·S, C, h, w)
    with eval_mode(prior), torch.no_grad():  # the originals' region, scored given their known part
        region_nats = -prior.log_prob(x[::S].to(prior.device), cond.map(lambda t: t[::S]),
                                      known=masks.to(prior.device)).double().cpu()  # (n,)
    completions = rearrange(decode(vqvae, (drawn,)), "(n s) c h w -> n s c h w", s=S)
    shown = F.interpolate(masks[:, None].float(), size=images.shape[2:], mode="nearest") > 0.5  # (n, 1, H, W)
    return Completion(shown, completions, images, region_nats)


def completion_grid(result: Completion, levels: int = 256) -> tuple[torch.Tensor, int]:
    """One row per image: the input with its hidden region gray, the completions, the original
    -> (uint8 images in [0, 255], nrow); ``levels``: the images' values (2 when binarized)."""
    originals = to_display(result.originals, levels)[:, None]  # (n, 1, C, H, W)
    occluded = torch.where(result.shown[:, None], originals, torch.full_like(originals, 128))
    row = torch.cat([occluded, to_display(result.completions, levels), originals], 1)
    return rearrange(row, "n s c h w -> (n s) c h w"), row.shape[1]

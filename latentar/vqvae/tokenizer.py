"""What a tokenizer is: a model that turns uint8 images (B, C, H, W) into grids of symbols and back
(the VQ-VAE, `latentar.vqvae.model`; Image GPT's colour palette, `latentar.vqvae.palette`). Recipes,
the code datasets, sampling and scoring talk to this interface only, so either serves a code prior.

A tokenizer holds ``image_shape`` (C, H, W) and ``levels`` (its images take values in [0, levels)),
says what grids it makes (``grid_shapes``, ``codebook_sizes``, ``code_levels``), and implements
``forward(images) -> (reconstruction floats in the [-1, 1] scale, codes, loss)``, ``encode``,
``decode_codes`` and ``memory_floor``; the rest is shared here.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

import torch
from torch import nn

from latentar.nn.modes import eval_mode
from latentar.saving import Saveable


class Tokenizer(nn.Module, Saveable):
    """Images uint8 (B, C, H, W) <-> symbol grids long (B, h, w) (or a dict of levels)."""

    image_shape: tuple[int, int, int]  # (C, H, W) of the images it takes
    levels: int  # pixel levels of those images
    config: Any  # its config dataclass (`VQVAEConfig`, `PaletteConfig`)

    @property
    def grid_shapes(self) -> dict[str, tuple[int, int]]:
        """(h, w) of each code level: {"codes": ...} with one level."""
        raise NotImplementedError

    @property
    def codebook_sizes(self) -> dict[str, int]:
        """K of each code level, keyed as ``grid_shapes``."""
        raise NotImplementedError

    @property
    def code_levels(self) -> list[str]:
        """The code levels in the order priors draw them, top first (the keys of ``grid_shapes``)."""
        return ["codes"]

    @property
    def code_grids(self) -> list[tuple[int, tuple[int, int]]]:
        """[(K, (h, w))] of each code grid, in ``code_levels`` order (top first)."""
        return [(self.codebook_sizes[level], self.grid_shapes[level]) for level in self.code_levels]

    def encode(self, images: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """images uint8 (B, C, H, W) -> codes long (B, h, w), or a dict of levels."""
        raise NotImplementedError

    def decode_codes(self, codes: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """Codes as ``encode`` returns them (a grid may also be (B, 1, h, w)) -> images uint8 (B, C, H, W)."""
        raise NotImplementedError

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """images uint8 (B, C, H, W) -> their reconstructions, uint8 (B, C, H, W)."""
        with eval_mode(self):
            return self.to_uint8(self(images)[0])

    def fingerprint(self) -> str:
        """A short stable hash of the config and every weight and buffer (16 hex digits)."""
        digest = hashlib.sha256(json.dumps(self.config_dict(), sort_keys=True).encode())
        for name, tensor in sorted(self.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.numpy().tobytes())
        return digest.hexdigest()[:16]

    @property
    def device(self) -> torch.device:
        return next(itertools.chain(self.parameters(), self.buffers())).device

    def to_float(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) in [0, levels) -> floats in [-1, 1], checked against image_shape."""
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            raise TypeError(f"images must be a uint8 tensor (B, C, H, W), got "
                            f"{images.dtype if isinstance(images, torch.Tensor) else type(images).__name__}")
        if images.dim() != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"images must have shape (B, {', '.join(map(str, self.image_shape))}), "
                             f"got {tuple(images.shape)}")
        if images.numel() and int(images.max()) >= self.levels:
            raise ValueError(f"images have values up to {int(images.max())}, expected [0, {self.levels})")
        return images.to(self.device).float() * (2.0 / (self.levels - 1)) - 1.0

    def to_uint8(self, x: torch.Tensor) -> torch.Tensor:
        """Floats in the [-1, 1] scale -> the nearest pixel levels, uint8."""
        return ((x + 1.0) * ((self.levels - 1) / 2.0)).round().clamp(0, self.levels - 1).to(torch.uint8)

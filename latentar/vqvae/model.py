"""The VQ-VAE (van den Oord et al. 2017) and its two-level form, VQ-VAE-2 (Razavi et al. 2019).

Images cross the interface as uint8 (B, C, H, W) with values in [0, levels) and are
scaled to [-1, 1] inside. The flat model has one code grid of (H/2^n, W/2^n); the
hierarchical one adds a top grid at half that resolution, and its codes are a dict
``{"bottom": (B, hb, wb), "top": (B, ht, wt)}`` (the keys are the level names of
code datasets).

    vqvae = VQVAE((1, 28, 28), preset="mnist")       # 28×28 -> 7×7 codes
    loss, metrics = vqvae.loss(images)                # training objective
    codes = vqvae.encode(images)                      # long (B, 7, 7)
    images = vqvae.decode_codes(codes)                # uint8 (B, 1, 28, 28)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentar.checks import (
    COUNT,
    DEPTH_OR_NONE,
    FRACTION,
    NON_NEGATIVE,
    SYMBOLS,
    Bound,
    Checked,
    FieldError,
    build,
    check_value,
)
from latentar.memory import leaf_output_bytes, tensor_bytes
from latentar.nn.modes import eval_mode
from latentar.quantizers import VectorQuantizer
from latentar.quantizers.vector_quantizer import UPDATES
from latentar.registry import MODELS
from latentar.vqvae.networks import Decoder, Encoder
from latentar.vqvae.tokenizer import Tokenizer

LEVELS = ("bottom", "top")  # code levels of a hierarchical VQ-VAE, in this order
PIXEL_LEVELS = Bound(2, 256)  # levels of uint8 images


@dataclass
class VQVAEConfig(Checked):
    """The architecture and codebook of a VQ-VAE (the image shape comes from the data);
    every field is checked on creation."""

    label = "vqvae"
    bounds = {"res_blocks": DEPTH_OR_NONE, "codebook_size": SYMBOLS, "top_codebook_size": SYMBOLS,
              "beta": NON_NEGATIVE, "codebook_update": UPDATES, "decay": FRACTION, "kmeans_iters": COUNT,
              "restart_threshold": NON_NEGATIVE}

    downsample: int = 2  # n: the (bottom) code grid is (H / 2^n, W / 2^n)
    hidden: int = 32  # channels of the encoder and decoder convolutions
    res_hidden: int = 16  # inner channels of a residual block
    res_blocks: int = 2  # residual blocks in each encoder and decoder stack
    embed_dim: int = 16  # D: width of a code vector
    codebook_size: int = 128  # K: codes in the (bottom) codebook
    hierarchical: bool = False  # VQ-VAE-2: add a top code grid at half the bottom resolution
    top_codebook_size: int | None = None  # K of the top codebook; None: codebook_size
    beta: float = 0.25  # weight of the commitment loss
    codebook_update: str = "ema"  # "ema" (moving averages) or "loss" (codebook loss + optimizer)
    decay: float = 0.99  # EMA decay of the codebook statistics
    kmeans_iters: int | None = 10  # Lloyd iterations of the k-means init; None: random init
    restart_threshold: float = 1.0  # re-seed codes whose EMA usage (vectors/step) is below; 0: never


PRESETS: dict[str, dict] = {
    "tiny": dict(downsample=1, hidden=8, res_hidden=4, res_blocks=1, embed_dim=4, codebook_size=8,
                 kmeans_iters=2),  # tests
    "mnist": dict(downsample=2, hidden=32, res_hidden=16, res_blocks=2, embed_dim=16,
                  codebook_size=128),  # 28×28 -> 7×7, sized for a CPU (the defaults)
    "small": dict(downsample=2, hidden=64, res_hidden=32, res_blocks=2, embed_dim=32,
                  codebook_size=256),  # twice as wide: better reconstructions, slower
    "paper": dict(downsample=2, hidden=256, res_hidden=256, res_blocks=2, embed_dim=64,
                  codebook_size=512),  # the VQ-VAE paper's CIFAR-10 / ImageNet model
}


class VQVAE(Tokenizer):
    """A VQ-VAE for uint8 images of ``image_shape`` (C, H, W) with ``levels`` pixel levels.

    Build from a config, or from a preset (``"tiny"``, ``"mnist"``, ``"paper"``) with
    field overrides: ``VQVAE((1, 28, 28), preset="mnist", codebook_size=128)``.
    """

    model_type = "vqvae"
    presets = PRESETS

    def __init__(self, image_shape: tuple[int, int, int], config: VQVAEConfig | None = None, *,
                 levels: int = 256, preset: str | None = None, **overrides):
        super().__init__()
        if config is not None and (preset is not None or overrides):
            raise TypeError("give either config= or preset=/field overrides, not both")
        self.config = config if config is not None else self.make_config(preset, **overrides)
        self.image_shape = check_value(image_shape, tuple[int, int, int], "vqvae.image_shape")
        self.levels = check_value(levels, int, "vqvae.levels", PIXEL_LEVELS)
        self._check_geometry()
        cfg, (C, _, _) = self.config, self.image_shape
        nets = dict(hidden=cfg.hidden, res_hidden=cfg.res_hidden, res_blocks=cfg.res_blocks)
        quant: dict[str, Any] = dict(beta=cfg.beta, update=cfg.codebook_update, decay=cfg.decay,
                                     kmeans_iters=cfg.kmeans_iters, restart_threshold=cfg.restart_threshold)
        D = cfg.embed_dim
        if not cfg.hierarchical:
            self.encoder = Encoder(C, D, downsample=cfg.downsample, **nets)
            self.quantizer = VectorQuantizer(cfg.codebook_size, D, **quant)
            self.decoder = Decoder(D, C, upsample=cfg.downsample, **nets)
            return
        self.encoder = Encoder(C, cfg.hidden, downsample=cfg.downsample, **nets)  # bottom features
        self.top_encoder = Encoder(cfg.hidden, D, downsample=1, **nets)
        self.top_quantizer = VectorQuantizer(self.top_codebook_size, D, **quant)
        self.top_decoder = Decoder(D, D, upsample=1, **nets)  # top codes -> bottom resolution
        self.bottom_mix = nn.Conv2d(cfg.hidden + D, D, 1)  # bottom features + decoded top -> D
        self.quantizer = VectorQuantizer(cfg.codebook_size, D, **quant)
        self.top_upsample = nn.ConvTranspose2d(D, D, 4, stride=2, padding=1)
        self.decoder = Decoder(2 * D, C, upsample=cfg.downsample, **nets)

    @classmethod
    def make_config(cls, preset: str | None = None, **overrides) -> VQVAEConfig:
        """The config: defaults, then the named preset, then the overrides."""
        values: dict = {}
        if preset is not None:
            if preset not in cls.presets:
                raise ValueError(f"unknown VQ-VAE preset {preset!r}; known presets: {sorted(cls.presets)}")
            values.update(cls.presets[preset])
        known = {f.name for f in dataclasses.fields(VQVAEConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown VQ-VAE field(s) {unknown}; fields: {sorted(known)}")
        return VQVAEConfig(**{**values, **overrides})

    def _check_geometry(self) -> None:
        _, H, W = self.image_shape
        factor = 2 ** (self.config.downsample + self.config.hierarchical)
        if H % factor or W % factor:
            what = "downsample + 1 (the top level)" if self.config.hierarchical else "downsample"
            raise ValueError(f"image size {H}×{W} is not divisible by 2^{what} = {factor}; "
                             f"choose a smaller downsample (28×28 takes n <= 2 flat, n <= 1 hierarchical)")

    # ---- shapes and identity -----------------------------------------------------
    @property
    def top_codebook_size(self) -> int:
        return self.config.top_codebook_size or self.config.codebook_size

    @property
    def grid_shapes(self) -> dict[str, tuple[int, int]]:
        """(h, w) of each code level: {"codes": ...} flat, {"bottom": ..., "top": ...} hierarchical."""
        _, H, W = self.image_shape
        f = 2 ** self.config.downsample
        if not self.config.hierarchical:
            return {"codes": (H // f, W // f)}
        return {"bottom": (H // f, W // f), "top": (H // (2 * f), W // (2 * f))}

    @property
    def codebook_sizes(self) -> dict[str, int]:
        """K of each code level, keyed as ``grid_shapes``."""
        if not self.config.hierarchical:
            return {"codes": self.config.codebook_size}
        return {"bottom": self.config.codebook_size, "top": self.top_codebook_size}

    @property
    def code_levels(self) -> list[str]:
        """The code levels in the order priors draw them, top first: ["codes"] flat, ["top", "bottom"]
        hierarchical (the keys of ``grid_shapes``)."""
        return ["codes"] if not self.config.hierarchical else ["top", "bottom"]

    def config_dict(self) -> dict:
        return {"image_shape": list(self.image_shape), "levels": self.levels, "config": asdict(self.config)}

    @classmethod
    def from_config(cls, config: dict) -> "VQVAE":
        """The VQ-VAE ``config_dict`` describes; every value is checked before a layer is built."""
        keys = ["config", "image_shape", "levels"]
        if not isinstance(config, dict) or sorted(config) != keys:
            raise FieldError(f"a VQ-VAE config must be a dict with the keys {keys}, got {config!r:.200}")
        return cls(config["image_shape"], build(VQVAEConfig, config["config"], "vqvae"), levels=config["levels"])

    def memory_floor(self) -> tuple[int, str]:
        """(bytes, what they are) of one image and the activations of its encoder and decoder
        passes at batch 1, measured on a meta copy (``latentar.memory.leaf_output_bytes``; the
        quantizers' distance tables and the top level's smaller maps are left out)."""
        C, H, W = self.image_shape
        D = self.config.embed_dim

        def one_pass(model: VQVAE) -> None:
            model.encoder(torch.zeros(1, C, H, W, device="meta"))
            vectors = {level: torch.zeros(1, D, *shape, device="meta") for level, shape in model.grid_shapes.items()}
            model._decode(vectors["codes"] if "codes" in vectors else vectors["bottom"], vectors.get("top"))

        with torch.device("meta"):
            meta = VQVAE.from_config(self.config_dict())
        floor = tensor_bytes(self.image_shape, torch.uint8) + leaf_output_bytes(meta, lambda _: one_pass(meta))
        return floor, f"one image {self.image_shape} and its encoder and decoder passes"

    # ---- the model ---------------------------------------------------------------
    def forward(self, images: torch.Tensor):
        """images uint8 (B, C, H, W) -> (reconstruction floats (B, C, H, W) in the [-1, 1] scale,
        codes (long (B, h, w), or the dict of both levels), quantizer loss scalar)."""
        x = self.to_float(images)  # (B, C, H, W) in [-1, 1]
        if not self.config.hierarchical:
            quantized, codes, vq_loss = self.quantizer(self.encoder(x))  # (B, D, h, w), (B, h, w)
            return self.decoder(quantized), codes, vq_loss
        features = self.encoder(x)  # (B, hidden, hb, wb)
        top_q, top, top_loss = self.top_quantizer(self.top_encoder(features))  # (B, D, ht, wt)
        mixed = self.bottom_mix(torch.cat([features, self.top_decoder(top_q)], 1))  # (B, D, hb, wb)
        bottom_q, bottom, bottom_loss = self.quantizer(mixed)  # (B, D, hb, wb)
        return self._decode(bottom_q, top_q), {"bottom": bottom, "top": top}, bottom_loss + top_loss

    def _decode(self, bottom_q: torch.Tensor, top_q: torch.Tensor | None) -> torch.Tensor:
        """Code vectors (B, D, hb, wb) [and top (B, D, ht, wt)] -> floats (B, C, H, W)."""
        if top_q is None:
            return self.decoder(bottom_q)
        return self.decoder(torch.cat([bottom_q, self.top_upsample(top_q)], 1))  # (B, 2D, hb, wb) in

    def loss(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """images uint8 (B, C, H, W) -> (MSE in the [-1, 1] scale + quantizer loss, batch metrics)."""
        recon, codes, vq_loss = self(images)
        mse = F.mse_loss(recon, self.to_float(images))
        loss = mse + vq_loss
        # 0-dim tensors, left on the device: the trainer reads them at log time
        metrics = {"mse": mse.detach(), "psnr": psnr(mse.detach()), "vq_loss": vq_loss.detach()}
        for level, grid in (codes.items() if isinstance(codes, dict) else [("codes", codes)]):
            p = torch.bincount(grid.flatten(), minlength=self.codebook_sizes[level]).double() / grid.numel()
            prefix = "" if level == "codes" else f"{level}_"
            metrics[f"{prefix}perplexity"] = torch.exp(-(p * p.clamp_min(1e-12).log()).sum())
        return loss, metrics

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """images uint8 (B, C, H, W) -> codes long (B, h, w) in [0, K), or the dict
        {"bottom": (B, hb, wb), "top": (B, ht, wt)} when hierarchical. Never updates the codebook."""
        with eval_mode(self):
            return self(images)[1]

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """Codes as ``encode`` returns them -> images uint8 (B, C, H, W).

        Grids may also come as (B, 1, h, w), the shape priors sample in code mode.
        """
        with eval_mode(self):
            if not self.config.hierarchical:
                if isinstance(codes, dict):
                    raise TypeError("this VQ-VAE is flat: pass one code grid (B, h, w), not a dict")
                return self.to_uint8(self._decode(self._embed(codes, "codes", self.quantizer), None))
            if not isinstance(codes, dict) or set(codes) != set(LEVELS):
                raise TypeError(f"this VQ-VAE is hierarchical: pass {{'bottom': (B, hb, wb), "
                                f"'top': (B, ht, wt)}}, got {type(codes).__name__}")
            bottom = self._embed(codes["bottom"], "bottom", self.quantizer)
            top = self._embed(codes["top"], "top", self.top_quantizer)
            if bottom.shape[0] != top.shape[0]:
                raise ValueError(f"bottom and top codes differ in batch size: {bottom.shape[0]} != {top.shape[0]}")
            return self.to_uint8(self._decode(bottom, top))

    def _embed(self, grid: torch.Tensor, level: str, quantizer: VectorQuantizer) -> torch.Tensor:
        """Check one code grid (B, h, w) or (B, 1, h, w) against ``level`` -> vectors (B, D, h, w)."""
        if grid.dim() == 4 and grid.shape[1] == 1:
            grid = grid[:, 0]
        h, w = self.grid_shapes[level]
        if grid.dim() != 3 or tuple(grid.shape[1:]) != (h, w):
            what = "codes" if level == "codes" else f"{level} codes"  # one level is named "codes" itself
            raise ValueError(f"{what} must have shape (B, {h}, {w}), got {tuple(grid.shape)}")
        return quantizer.embed_codes(grid.to(self.device))


def psnr(mse: float | torch.Tensor) -> float | torch.Tensor:
    """PSNR in dB of a mean squared error measured in the [-1, 1] scale (peak-to-peak 2); a
    tensor gives a tensor (inf where the error is 0), without a host synchronisation."""
    if isinstance(mse, torch.Tensor):
        return 10.0 * torch.log10(4.0 / mse)
    return 10.0 * math.log10(4.0 / mse) if mse > 0 else math.inf


MODELS.register("vqvae")(VQVAE)

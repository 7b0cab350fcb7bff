"""Image GPT's colour palette (Chen et al. 2020): k-means clusters of pixel colours, each pixel
a token, the index of its nearest colour. A tokenizer like the VQ-VAE (`latentar.vqvae.tokenizer`),
with no network and no downsampling: an image of (C, H, W) becomes a grid of (H, W) tokens.

    palette = Palette(num_colors=512).fit(images)   # images uint8 (N, C, H, W)
    codes = palette.encode(images)                  # long (N, H, W) in [0, 512)
    images = palette.decode_codes(codes)            # uint8 (N, C, H, W): each pixel its colour

The fit draws ``fit_pixels`` pixels at random (seeded) from the images and runs the project's
k-means (`latentar.quantizers.kmeans`: k-means++ seeding, then Lloyd) on their colours; the colours
are kept as float centers, sorted by brightness (the mean of their channels), and decoded rounded
to the nearest pixel level. A prior over palette tokens is scored in nats (bits) per token: one
token stands for a whole pixel, C channels at once, so its bits are not 8-bit bits per dimension.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from einops import rearrange

from latentar.checks import COUNT, SEED, SIZE, SYMBOLS, Checked, FieldError, build, check_value
from latentar.memory import tensor_bytes
from latentar.nn.modes import eval_mode
from latentar.quantizers.kmeans import kmeans, squared_distances
from latentar.registry import MODELS
from latentar.vqvae.model import PIXEL_LEVELS
from latentar.vqvae.tokenizer import Tokenizer

PIXEL_CHUNK = 1 << 16  # pixels whose distances to every colour are computed at once (K floats each)


@dataclass
class PaletteConfig(Checked):
    """How a palette is fitted; every field is checked on creation."""

    label = "palette"
    bounds = {"num_colors": SYMBOLS, "kmeans_iters": COUNT, "fit_pixels": SIZE, "seed": SEED}

    num_colors: int = 512  # K: colours in the palette, the tokens a prior models (Image GPT: 512, 9 bits)
    kmeans_iters: int = 10  # Lloyd iterations of the fit, after a k-means++ seeding
    fit_pixels: int = 100_000  # pixels drawn at random from the images to fit on (all of them when fewer)
    seed: int = 0  # the seed of that draw and of the k-means++ seeding


class Palette(Tokenizer):
    """A colour palette for uint8 images of ``image_shape`` (C, H, W) with ``levels`` pixel levels:
    ``Palette(num_colors=512)`` (any `PaletteConfig` field by keyword), then ``fit(images)``, which
    sets the image shape. ``colors``: float (K, C), in pixel levels."""

    model_type = "palette"

    def __init__(self, num_colors: int = 512, *, image_shape: tuple[int, int, int] | None = None,
                 levels: int = 256, **settings):
        super().__init__()
        self.config: PaletteConfig = build(PaletteConfig, {"num_colors": num_colors, **settings}, "palette")
        self.levels = check_value(levels, int, "palette.levels", PIXEL_LEVELS)
        self.shape: tuple[int, int, int] | None = None
        self.register_buffer("colors", None)
        if image_shape is not None:
            self.shape = check_value(image_shape, tuple[int, int, int], "palette.image_shape")
            self.colors = torch.zeros(num_colors, self.shape[0])  # (K, C): the saved colours replace them

    # ---- shapes and identity -----------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int, int]:  # type: ignore[override]  # known once fitted
        if self.shape is None:
            raise ValueError("this palette is not fitted yet: call palette.fit(images) first")
        return self.shape

    @property
    def grid_shapes(self) -> dict[str, tuple[int, int]]:
        """{"codes": (H, W)}: one token per pixel."""
        return {"codes": self.image_shape[1:]}

    @property
    def codebook_sizes(self) -> dict[str, int]:
        return {"codes": self.config.num_colors}

    def config_dict(self) -> dict:
        return {"image_shape": list(self.image_shape), "levels": self.levels, "config": asdict(self.config)}

    @classmethod
    def from_config(cls, config: dict) -> Palette:
        """The palette ``config_dict`` describes (colours zero until its saved ones are loaded)."""
        keys = ["config", "image_shape", "levels"]
        if not isinstance(config, dict) or sorted(config) != keys:
            raise FieldError(f"a palette config must be a dict with the keys {keys}, got {config!r:.200}")
        settings = vars(build(PaletteConfig, config["config"], "palette"))
        return cls(**settings, image_shape=config["image_shape"], levels=config["levels"])

    def memory_floor(self) -> tuple[int, str]:
        """(bytes, what they are) of encoding one image: it, its tokens and their distances to the colours."""
        C, H, W = self.image_shape
        pixels = min(H * W, PIXEL_CHUNK)
        floor = (tensor_bytes((C, H, W), torch.uint8) + tensor_bytes((H, W), torch.long)
                 + tensor_bytes((pixels, self.config.num_colors), torch.float32))
        return floor, f"one image {self.image_shape}, its tokens and their distances to the palette"

    # ---- fitting -----------------------------------------------------------------
    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> Palette:
        """k-means of the colours of ``images`` uint8 (N, C, H, W) -> this palette, fitted for (C, H, W).

        Raises ValueError when the pixels drawn hold fewer distinct colours than ``num_colors``."""
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            tensor = isinstance(images, torch.Tensor)
            what = f"{images.dtype} {tuple(images.shape)}" if tensor else type(images).__name__
            raise TypeError(f"a palette fits uint8 images (N, C, H, W), got {what}")
        if images.numel() == 0:
            raise ValueError(f"a palette needs images to fit, got the empty shape {tuple(images.shape)}")
        if int(images.max()) >= self.levels:
            raise ValueError(f"images have values up to {int(images.max())}, expected [0, {self.levels})")
        cfg = self.config
        pixels = rearrange(images, "n c h w -> (n h w) c")
        generator = torch.Generator(device=images.device).manual_seed(cfg.seed)
        if len(pixels) > cfg.fit_pixels:
            pixels = pixels[torch.randperm(len(pixels), generator=generator, device=images.device)[:cfg.fit_pixels]]
        distinct = len(torch.unique(pixels, dim=0))
        if distinct < cfg.num_colors:
            raise ValueError(f"the {len(pixels)} pixels drawn to fit hold {distinct} distinct colours, fewer than "
                             f"palette.num_colors = {cfg.num_colors}; choose num_colors <= {distinct}")
        centers, _ = kmeans(pixels.float(), cfg.num_colors, cfg.kmeans_iters, generator)  # (K, C)
        _, C, H, W = images.shape
        self.shape = (C, H, W)
        self.colors = centers[centers.mean(1).argsort(stable=True)].to(images.device)
        return self

    # ---- the tokenizer -----------------------------------------------------------
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """images uint8 (B, C, H, W) -> (their palette colours as floats (B, C, H, W) in the [-1, 1]
        scale, tokens long (B, H, W), a zero loss: nothing to train)."""
        codes = self.encode(images)
        return self.to_float(self.decode_codes(codes)), codes, self.colors.new_zeros(())

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images uint8 (B, C, H, W) -> tokens long (B, H, W): the index of each pixel's nearest colour."""
        x = self.to_float(images)  # checks dtype, shape and values
        B, _, H, W = x.shape
        pixels = rearrange(images.to(self.device), "b c h w -> (b h w) c").float()
        nearest = [squared_distances(chunk, self.colors).argmin(1) for chunk in pixels.split(PIXEL_CHUNK)]
        return torch.cat(nearest).view(B, H, W) if nearest else pixels.new_zeros(B, H, W, dtype=torch.long)

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:  # type: ignore[override]  # one level, a tensor
        """tokens long (B, H, W) or (B, 1, H, W) in [0, K) -> images uint8 (B, C, H, W), each pixel its colour."""
        with eval_mode(self):
            if not isinstance(codes, torch.Tensor) or codes.is_floating_point() or codes.is_complex():
                raise TypeError(f"palette tokens must be an integer tensor (B, H, W), got "
                                f"{codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__}")
            if codes.dim() == 4 and codes.shape[1] == 1:
                codes = codes[:, 0]
            H, W = self.image_shape[1:]
            if codes.dim() != 3 or tuple(codes.shape[1:]) != (H, W):
                raise ValueError(f"palette tokens must have shape (B, {H}, {W}), got {tuple(codes.shape)}")
            K = self.config.num_colors
            if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= K):
                raise ValueError(f"palette tokens must lie in [0, {K}), got values from {int(codes.min())} "
                                 f"to {int(codes.max())}")
            colors = self.colors.round().clamp(0, self.levels - 1).to(torch.uint8)  # (K, C)
            return rearrange(colors[codes.to(self.device).long()], "b h w c -> b c h w")


MODELS.register("palette")(Palette)

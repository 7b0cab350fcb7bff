"""The tokenizer stage: images uint8 (B, C, H, W) <-> code grids long (B, h, w), by a VQ-VAE or by
Image GPT's colour palette (both a ``Tokenizer``)."""

from latentar.vqvae.model import LEVELS, PRESETS, VQVAE, VQVAEConfig, psnr
from latentar.vqvae.networks import Decoder, Encoder, ResidualBlock, ResidualStack
from latentar.vqvae.palette import Palette, PaletteConfig
from latentar.vqvae.tokenizer import Tokenizer

__all__ = ["Decoder", "Encoder", "LEVELS", "PRESETS", "Palette", "PaletteConfig", "ResidualBlock", "ResidualStack",
           "Tokenizer", "VQVAE", "VQVAEConfig", "psnr"]

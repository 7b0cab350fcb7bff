"""The VQ-VAE stage: images uint8 (B, C, H, W) <-> code grids long (B, h, w)."""

from latentar.vqvae.model import LEVELS, PRESETS, VQVAE, VQVAEConfig, psnr
from latentar.vqvae.networks import Decoder, Encoder, ResidualBlock, ResidualStack

__all__ = ["Decoder", "Encoder", "LEVELS", "PRESETS", "ResidualBlock", "ResidualStack", "VQVAE",
           "VQVAEConfig", "psnr"]

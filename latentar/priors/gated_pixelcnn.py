"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders").

A vertical stack (every row above) and a horizontal stack (the current row up to the
current pixel) of gated ``tanh · σ`` layers (``latentar.nn.gated``), with the
vertical-to-horizontal 1×1 link, residual connections in the horizontal stack and
skip connections summed into two 1×1 output layers. The horizontal stack masks R→G→B
channel groups (mask A in the first layer, B after), so symbol (c, h, w) sees every
earlier pixel — no blind spot — and channels < c of its own pixel. Class conditioning
adds a learned per-class bias to every gate of both stacks (V·h in the paper).

``sample`` is exact and incremental (Ramachandran et al. 2017): the vertical stack
runs once per row (it only depends on rows above), and the horizontal stack runs at
the current position only, reading its inputs from per-layer caches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from latentar.checks import Checked
from latentar.nn.conditioning import class_bias_table
from latentar.nn.gated import GatedStackLayer, conv1x1
from latentar.nn.incremental import FullPass, StepCache, StepPass, incremental_sampler
from latentar.nn.masked import masked_output, round_to_groups
from latentar.priors.base import Prior, PriorSpec, eval_mode, register_prior


@dataclass
class GatedPixelCNNArch(Checked):
    label = "gated_pixelcnn"

    hidden: int = 64  # p: gated features per stack (rounded up to a multiple of C)
    num_layers: int = 8  # gated layers; the first reads the image with mask A
    first_kernel: int = 7  # k of the first layer: (k//2+1)×k vertical, 1×k horizontal
    kernel: int = 3  # k of the other layers
    output_hidden: int = 256  # width of the 1×1 layer between the skip sum and the head


@register_prior("gated_pixelcnn")
class GatedPixelCNN(Prior):
    Arch = GatedPixelCNNArch
    presets = {
        "tiny": dict(hidden=12, num_layers=2, first_kernel=3, output_hidden=24),
        "small": dict(hidden=32, num_layers=6, first_kernel=5, output_hidden=96),
        "default": {},
        # the conditional ImageNet 32×32 model: 20 layers of 384 units with 5×5 filters
        "paper": dict(hidden=384, num_layers=20, first_kernel=7, kernel=5, output_hidden=1024),
    }
    heads = ("categorical", "logistic_mixture")
    channel_masked = True
    full_context = True  # vertical + horizontal stacks: no blind spot

    def __init__(self, spec: PriorSpec, arch: GatedPixelCNNArch):
        super().__init__(spec, arch)
        C = spec.shape[0]
        hidden = round_to_groups(arch.hidden, C)
        out_hidden = round_to_groups(arch.output_hidden, C)
        in_channels = C * self.input.dim
        self.layers = nn.ModuleList(
            GatedStackLayer(in_channels if i == 0 else hidden, hidden,
                            arch.first_kernel if i == 0 else arch.kernel, C, first=i == 0)
            for i in range(arch.num_layers))
        # per layer: 2p for the vertical gate, 2p for the horizontal
        self.class_bias = class_bias_table(spec.num_classes, arch.num_layers * 4 * hidden)
        self.out = masked_output(hidden, out_hidden, self.head.num_params, C)

    def _biases(self, labels: torch.Tensor | None) -> list[tuple]:
        """Per layer (vertical bias (B, 2p), horizontal bias (B, 2p)), or Nones."""
        if self.class_bias is None:
            return [(None, None)] * len(self.layers)
        chunks = self.class_bias(labels).chunk(2 * len(self.layers), dim=1)
        return list(zip(chunks[0::2], chunks[1::2]))

    def network(self, z, labels, context):
        return self._run(z, z, self._biases(labels), FullPass([tuple(z.shape[-2:])]))

    def _run(self, z, h, biases, ops, links=None):
        """The stacks: z (B, C·E, H, W) the image; h the first horizontal input.

        Whole maps when ``links`` is None; else one position of a generation step, with
        the vertical stack's links (B, 2p, 1, 1) of that position given -> (B, P, ·, ·).
        """
        v, skips = z, 0
        for i, (layer, (bias_v, bias_h)) in enumerate(zip(self.layers, biases)):
            if links is None:
                v, link = layer.vertical(v, bias_v, ops)  # (B, p, H, W), (B, 2p, H, W)
            else:
                link = links[i]
            h, skip = layer.horizontal(h, link, bias_h, ops)
            skips = skips + skip
        return conv1x1(self.out, skips)  # (B, P, ·, ·)

    @incremental_sampler
    def sample(self, n, cond=None, *, temperature=1.0, top_k=None, generator=None):
        """Exact incremental sampling; same draws, in the same order, as ``naive_sample``.

        The vertical stack runs once per row (it sees only rows above); the horizontal
        stack runs at the current position, once per channel, from cached input maps.
        """
        C, H, W = self.spec.shape
        x, (labels, _) = self.blank_grids(n, cond)
        draw = dict(temperature=temperature, top_k=top_k, generator=generator)
        with eval_mode(self):
            z = self.input(x)  # (n, C·E, H, W), filled in as symbols are drawn
            biases = self._biases(labels)
            cache = StepCache(n, [(H, W)])
            for row in range(H):
                ops, v, links = StepPass(cache, row), z, []
                for layer, (bias_v, _) in zip(self.layers, biases):
                    v, link = layer.vertical(v, bias_v, ops)  # (n, p, 1, W), (n, 2p, 1, W)
                    links.append(link)
                for col in range(W):
                    at = [link[..., col:col + 1] for link in links]  # (n, 2p, 1, 1) each
                    for c in range(C):
                        h = z[:, :, row:row + 1, col:col + 1]  # (n, C·E, 1, 1), channels < c drawn
                        params = self._run(z, h, biases, StepPass(cache, row, col), at)[:, :, 0, 0]
                        x[:, c, row, col] = self.head.sample(params, channel=c, **draw)
                        z[:, :, row, col] = self.input(x[:, :, row:row + 1, col:col + 1])[:, :, 0, 0]
                    # the first horizontal conv cached this pixel before its last draw
                    pixel = z[:, :, row:row + 1, col:col + 1]
                    cache.padded(self.layers[0].hconv, pixel, 0).write(pixel, row, col)
        return x

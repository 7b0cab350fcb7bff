"""``torch.compile`` of a prior's loss (``Prior.set_compile``): one compiled function per
prior class, with the options that the CPU back end needs."""

from __future__ import annotations

import functools

import torch

# Inductor's CPU code generator (torch 2.14) emits C++ that does not build when it fuses two
# identical bf16 reductions horizontally into one loop (it declares the converted accumulator
# twice): the bias gradients of two biased layers whose outputs are summed, as in every gated
# residual unit with an auxiliary input. One node per horizontal fusion avoids it; the option
# is read by the CPU back end only.
COMPILE_OPTIONS = {"cpp.max_horizontal_fusion_size": 1}


@functools.cache
def compiled(fn):
    """``torch.compile(fn)``, made once per function: a function of the prior (an argument,
    not a bound ``self``), so a copy of a prior (the EMA) runs its own weights through it."""
    return torch.compile(fn, options=COMPILE_OPTIONS)

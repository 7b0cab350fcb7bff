"""Device names as users write them (``--device``, ``sampling.device``, ``latentar.load(device=...)``)
-> ``torch.device``, checked against the machine:

    auto      a CUDA device when torch sees one, else the CPU
    cpu       the CPU
    cuda      a CUDA device; an error when torch sees none
    cuda:N    the N-th CUDA device; an error when there are not that many

``auto`` and ``cuda`` pick this process's GPU: under ``accelerate launch`` or torchrun the one of
its local rank (``LOCAL_RANK``; ranks share GPUs in turn when there are fewer GPUs than
processes), else the current one. The index is always written out ("cuda:0"), so the memory
cap (``latentar.memory``) is read from the very device the work runs on.
"""

from __future__ import annotations

import os
import re

import torch

DEVICE_NAMES = "auto, cpu, cuda or cuda:N"
DEVICE_HELP = "where the models run: auto (CUDA when available, else the CPU), cpu, cuda or cuda:N"
CUDA_PATTERN = re.compile(r"cuda(?::(\d+))?")


def resolve_device(name: str | torch.device) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' (or a torch.device) -> the torch.device, with its index
    for CUDA; a ValueError naming the device for a name torch does not have here."""
    text = str(name).strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    cuda = CUDA_PATTERN.fullmatch(text)
    if text != "auto" and cuda is None:
        raise ValueError(f"device must be {DEVICE_NAMES}, got {str(name)!r}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if text == "auto" and count == 0:
        return torch.device("cpu")
    if count == 0:
        raise ValueError(f"device {text!r} was asked for, but torch sees no CUDA device on this machine "
                         f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); "
                         "use --device cpu or auto")
    if cuda is not None and cuda[1] is not None:
        index = int(cuda[1])
        if index >= count:
            raise ValueError(f"device {text!r} was asked for, but torch sees {count} CUDA device(s): "
                             f"cuda:0 to cuda:{count - 1}")
        return torch.device("cuda", index)
    local_rank = os.environ.get("LOCAL_RANK")
    return torch.device("cuda", int(local_rank) % count if local_rank else torch.cuda.current_device())

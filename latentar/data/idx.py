"""The IDX format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian int32 per dimension, then the values in C order. The
MNIST files hold unsigned bytes (type code 0x08): images have magic 2051 and shape
(N, 28, 28), labels have magic 2049 and shape (N,).
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import torch

from latentar.data.cache import CorruptFileError

UBYTE = 0x08  # the only IDX type code the MNIST family uses
IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


def parse_idx(data: bytes, label: str | Path = "<bytes>", *, magic: int | None = None) -> torch.Tensor:
    """Decode IDX bytes (uncompressed) into a uint8 tensor of the shape the header gives.

    ``label`` names the file in errors; ``magic``, if given, is the magic number the
    file must carry (`IMAGES_MAGIC` or `LABELS_MAGIC`). Raises `CorruptFileError` for a
    bad header, a type other than unsigned bytes, or a length that disagrees with it.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise CorruptFileError(label, "not an IDX file (bad magic number)")
    found = struct.unpack(">i", data[:4])[0]
    if magic is not None and found != magic:
        raise CorruptFileError(label, f"IDX magic number {found}, expected {magic}")
    type_code, ndim = data[2], data[3]
    if type_code != UBYTE:
        raise CorruptFileError(label, f"IDX type code {type_code:#04x}; only unsigned bytes (0x08) are read")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CorruptFileError(label, "truncated IDX header")
    shape = struct.unpack(f">{ndim}i", data[4:header])
    expected = header + math.prod(shape)
    if len(data) != expected:
        raise CorruptFileError(label, f"IDX header promises {expected} bytes for shape {shape}, "
                                      f"file has {len(data)}")
    values = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)
    return torch.from_numpy(values.copy())


def images_and_labels(images: torch.Tensor, labels: torch.Tensor,
                      label: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn IDX images (N, H, W) and labels (N,) into ((N, 1, H, W) uint8, (N,) int64)."""
    if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
        raise CorruptFileError(label, f"IDX images {tuple(images.shape)} and labels "
                                      f"{tuple(labels.shape)} do not pair up")
    return images.unsqueeze(1), labels.long()  # (N, 1, H, W), (N,)

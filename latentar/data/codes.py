"""Code grids on disk: a dataset encoded by a VQ-VAE, read back memory-mapped for priors.

    encode_dataset(vqvae, load_dataset("mnist", "train"), "runs/codes", "train", source="mnist")
    codes = CodeDataset("runs/codes", "train")          # items: (long (1, 7, 7), label)
    bottom = CodeDataset(folder, "train", level="bottom", context="top")   # VQ-VAE-2
                                                        # items: (long (1, hb, wb), label, long (ht, wt))

A folder holds, per split and code level, ``{split}_{level}.npy`` (uint16 (N, h, w)),
``{split}_labels.npy`` (int64 (N,)) and one ``manifest.json``::

    {"format_version": 1, "vqvae_fingerprint": "...", "vqvae": {VQ-VAE config}, "tokenizer": "vqvae",
     "grids": {"codes": {"num_symbols": K, "shape": [h, w]}},     # or "bottom" + "top"
     "num_classes": 10,
     "splits": {"train": {"count": N, "source": "mnist", "labels": "train_labels.npy",
                          "files": {"codes": "train_codes.npy"}, "same_as_training": None},
                "test": {...}}}

``tokenizer`` is the model type that made the codes: "vqvae", or "palette" (Image GPT's colour
palette; absent in folders written before it), whose tokens' scores say that they are per palette
token (``PALETTE_TOKENS``). ``same_as_training`` carries the image split's reason when it was the training images (a
folder of images with nothing held out), so scores on its codes say so too.

The level of a flat VQ-VAE is ``"codes"``; a hierarchical one has ``"bottom"`` and ``"top"``.
Every split of a folder comes from the same VQ-VAE (the fingerprint says which).
"""

from __future__ import annotations

import os
import tokenize
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import broadcast_object_list
from torch.utils.data import DataLoader, Dataset, Subset

from latentar.data.subsets import dataset_attribute, dataset_size
from latentar.files import atomic_write_json, is_regular_file, read_json, temporary_path, write_error
from latentar.progress import progress_bar
from latentar.run_files import CODES_SOURCE_FILE, read_codes_source

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
CODE_DTYPE = np.uint16  # codebooks hold at most 65536 codes
LABEL_DTYPE = np.int64
LABELS = "labels"  # the key of a split's labels file beside its code levels


class CodesMismatchError(ValueError):
    """Codes used with a VQ-VAE or a prior that did not make them, or cannot model them."""


def read_manifest(folder: str | os.PathLike) -> dict:
    """The parsed ``manifest.json`` of a code folder."""
    path = Path(folder) / MANIFEST
    if not os.path.lexists(path):
        raise FileNotFoundError(f"{folder} holds no code grids: {MANIFEST} is missing "
                                f"(make them with `latentar encode --vqvae DIR --data NAME --out {folder}`)")
    manifest = read_json(path)
    for key in ("vqvae_fingerprint", "grids", "splits"):
        if not isinstance(manifest, dict) or key not in manifest:
            raise ValueError(f"{path} has no {key!r} entry; it is not a latentar code manifest")
    return manifest


def check_codes_match(vqvae: Any, manifest: dict) -> None:
    """Raise unless ``vqvae`` is the VQ-VAE that made the codes of ``manifest``."""
    found, expected = vqvae.fingerprint(), manifest["vqvae_fingerprint"]
    if found != expected:
        raise CodesMismatchError(f"these codes were made by VQ-VAE {expected}, but the given VQ-VAE is "
                                 f"{found}: decode (and encode) them with the VQ-VAE that made them")


def write_codes_source(prior_folder: str | os.PathLike, vqvae_fingerprint: str, level: str,
                       tokenizer: str = "vqvae") -> None:
    """Record in a code prior's model folder which VQ-VAE or palette (``tokenizer``: its model type; its
    fingerprint) and level its codes came from, so that sampling can refuse a tokenizer that did not
    make them and its model card can name it."""
    atomic_write_json(Path(prior_folder) / CODES_SOURCE_FILE, {"vqvae_fingerprint": vqvae_fingerprint,
                                                                "level": level, "tokenizer": tokenizer})


def check_codes_source(prior_folder: str | os.PathLike, vqvae: Any) -> None:
    """The VQ-VAE must be the one whose codes the prior in the model folder ``prior_folder``
    learned (when the prior recorded it)."""
    source = read_codes_source(prior_folder)
    if source is None:
        return
    expected, found = source["vqvae_fingerprint"], vqvae.fingerprint()
    if expected != found:
        raise CodesMismatchError(f"the prior in {prior_folder} learned the codes of VQ-VAE {expected}, but "
                                 f"--vqvae is VQ-VAE {found}: decode with the VQ-VAE that made its codes")


def encode_dataset(vqvae: Any, dataset: Dataset, out_dir: str | os.PathLike, split: str, *,
                   source: str | None = None, batch_size: int = 256, progress: bool = True,
                   processes: Any = None) -> dict:
    """Encode every item of ``dataset`` ((uint8 (C, H, W), label) items) into ``out_dir``.

    Writes the split's code grids and labels and records it in the manifest; returns the
    manifest. A split already encoded by this VQ-VAE with as many items is kept as it is.
    A folder holding another VQ-VAE's codes is an error (choose another folder).
    Under several ``processes`` (a ``PartialState``; every one calls this) process r of P
    encodes items r, r + P, ... into the main process's files: the same files as one process.
    """
    out = Path(out_dir)
    grids, fingerprint = _grids(vqvae), vqvae.fingerprint()
    manifest = read_manifest(out) if os.path.lexists(out / MANIFEST) else None
    if manifest is not None:
        check_codes_match(vqvae, manifest)
        done = manifest["splits"].get(split)
        if done and done["count"] == dataset_size(dataset) and all((out / f).is_file() for f in _files(done)):
            return manifest
    _check_images(vqvae, dataset)
    files = {level: f"{split}_{level}.npy" for level in grids} | {LABELS: f"{split}_labels.npy"}
    main = processes is None or processes.is_main_process
    temporaries = {key: temporary_path(out / name) for key, name in files.items()} if main else {}
    try:
        temporaries = shared(temporaries, processes)
        if main:  # the files, their disk space reserved, before any process writes into them
            create_arrays(temporaries, dataset_size(dataset), grids)
        wait(processes)
        _encode_into(vqvae, dataset, temporaries, split, batch_size, progress, processes)
        wait(processes)
        if main:
            for key, name in files.items():
                os.replace(temporaries[key], out / name)
    except OSError as e:
        raise write_error(out, e) from e
    finally:
        if main:
            for path in temporaries.values():
                path.unlink(missing_ok=True)
    if main:
        if manifest is None:
            manifest = {"format_version": FORMAT_VERSION, "vqvae_fingerprint": fingerprint,
                        "vqvae": vqvae.config_dict(), "tokenizer": vqvae.model_type, "grids": grids, "splits": {}}
        manifest["num_classes"] = dataset_attribute(dataset, "num_classes")
        manifest["splits"][split] = {"count": dataset_size(dataset), "source": source, "labels": files[LABELS],
                                     "files": {level: files[level] for level in grids},
                                     "same_as_training": dataset_attribute(dataset, "same_as_training")}
        atomic_write_json(out / MANIFEST, manifest)
    wait(processes)
    return manifest if main and manifest is not None else read_manifest(out)


def shared(paths: dict[str, Path], processes: Any) -> dict[str, Path]:
    """The main process's ``paths``, in every process."""
    if processes is None or processes.num_processes == 1:
        return paths
    box = [paths]
    broadcast_object_list(box, from_process=0)
    return box[0]


def wait(processes: Any) -> None:
    """A barrier of the ``processes`` (None: one process, nothing to wait for)."""
    if processes is not None:
        processes.wait_for_everyone()


def create_arrays(paths: dict[str, Path], count: int, grids: dict) -> None:
    """The zeroed .npy files of a split being encoded: codes ``CODE_DTYPE`` (count, h, w) per level, labels int64."""
    for key, path in paths.items():
        if key == LABELS:
            code_array(path, (count,), LABEL_DTYPE)
        else:
            code_array(path, (count, *grids[key]["shape"]))


def _encode_into(vqvae: Any, dataset: Dataset, paths: dict[str, Path], split: str, batch_size: int,
                 progress: bool, processes: Any) -> None:
    """Encode this process's share of ``dataset`` (items r, r + P, ...) into the .npy files at ``paths``."""
    rank, world = (processes.process_index, processes.num_processes) if processes is not None else (0, 1)
    arrays = {key: np.load(path, mmap_mode="r+") for key, path in paths.items()}
    rows = range(rank, dataset_size(dataset), world)
    loader = DataLoader(Subset(dataset, rows), batch_size=batch_size, shuffle=False)
    start = 0
    for images, batch_labels in progress_bar(loader, desc=f"encode {split}") if progress else loader:
        codes = vqvae.encode(images)  # long (B, h, w), or {level: (B, h, w)}
        codes = {"codes": codes} if isinstance(codes, torch.Tensor) else codes
        part = slice(rows[start], rows[start] + world * len(images), world)
        for key, array in arrays.items():
            values = torch.as_tensor(batch_labels) if key == LABELS else codes[key].cpu()
            array[part] = values.numpy().astype(array.dtype)
        start += len(images)
    for array in arrays.values():
        array.flush()


def code_array(path: Path, shape: tuple[int, ...], dtype: Any = CODE_DTYPE) -> np.memmap:
    """A zeroed .npy memory map of ``dtype`` values of ``shape`` at ``path``, its disk space
    reserved first: a full disk is an OSError here, not a SIGBUS while the map is written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    with open(path, "r+b") as f:
        os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    return array


def _grids(vqvae: Any) -> dict:
    return {level: {"num_symbols": vqvae.codebook_sizes[level], "shape": list(shape)}
            for level, shape in vqvae.grid_shapes.items()}


def _files(split_entry: dict) -> list[str]:
    return [split_entry["labels"], *split_entry["files"].values()]


def _check_images(vqvae: Any, dataset: Dataset) -> None:
    shape, levels = dataset_attribute(dataset, "shape"), dataset_attribute(dataset, "num_symbols")
    if shape is not None and tuple(shape) != tuple(vqvae.image_shape):
        raise ValueError(f"the dataset's images are {tuple(shape)} but the VQ-VAE takes {vqvae.image_shape}")
    if levels is not None and levels != vqvae.levels:
        raise ValueError(f"the dataset's images have {levels} levels but the VQ-VAE takes {vqvae.levels}")


def load_array(folder: Path, name: Any, dtype: Any, ndim: int) -> np.ndarray:
    """The .npy file ``name`` of the code folder ``folder``, memory-mapped: a plain file name
    (the manifest may not point elsewhere), a regular file in the folder (no link, FIFO or
    device), with ``ndim`` dimensions of ``dtype``; a ValueError naming the file otherwise."""
    if not isinstance(name, str) or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"{folder / MANIFEST} names {name!r}, not a file of the folder; encode the split again")
    path = folder / name
    if not is_regular_file(path):
        raise ValueError(f"{path} is missing or not a regular file (a link, FIFO or device); encode the split again")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, SyntaxError, tokenize.TokenError) as e:
        raise ValueError(f"{path} is not a .npy array latentar wrote ({e}); encode the split again") from e
    if array.dtype != dtype or array.ndim != ndim:
        raise ValueError(f"{path} holds {array.dtype} of {array.ndim} dimensions, expected {np.dtype(dtype)} of "
                         f"{ndim}; encode the split again")
    return array


PALETTE_TOKENS = ("palette tokens: nats and bits per palette token (one token per pixel, its channels at once), "
                  "not comparable with 8-bit bits/dim")


class CodeDataset(Dataset):
    """One split and level of a code folder, read memory-mapped.

    Items are ``(codes long (1, h, w), label)``; with ``context`` (a level name, e.g.
    ``"top"`` for the bottom level of a VQ-VAE-2) they are ``(codes, label, context
    long (h', w'))``, the spatial context a prior conditions on. ``level`` may be left
    out for a flat VQ-VAE's codes. With ``vqvae``, the folder must hold its codes.

    Attributes: ``shape`` (1, h, w), ``num_symbols``, ``num_classes``, ``symbols`` =
    "codes", ``fingerprint``, ``level``, and ``context_symbols`` / ``context_shape``
    (None without a context) — what `latentar.build_prior` needs to model the codes — and
    ``same_as_training`` (see the manifest above) and ``tokens`` (``PALETTE_TOKENS`` for palette
    tokens, else None): notes their scores carry.
    """

    symbols = "codes"

    def __init__(self, folder: str | os.PathLike, split: str, level: str | None = None,
                 context: str | None = None, vqvae: Any | None = None):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        if vqvae is not None:
            check_codes_match(vqvae, self.manifest)
        grids, splits = self.manifest["grids"], self.manifest["splits"]
        if split not in splits:
            raise ValueError(f"{self.folder} has no {split!r} codes; it has {sorted(splits)}")
        if level is None:
            if len(grids) != 1:
                raise ValueError(f"{self.folder} holds the levels {sorted(grids)} of a hierarchical VQ-VAE; "
                                 f"choose one (level='top', or level='bottom' with context='top')")
            level = next(iter(grids))
        for name, what in ((level, "level"), (context, "context")):
            if name is not None and name not in grids:
                raise ValueError(f"unknown {what} {name!r}; {self.folder} holds {sorted(grids)}")
        if context == level:
            raise ValueError(f"level {level!r} cannot be its own context")
        entry = splits[split]
        self.split, self.level, self.context_level = split, level, context
        self.fingerprint = self.manifest["vqvae_fingerprint"]
        self.num_classes = self.manifest.get("num_classes")
        self.tokenizer = self.manifest.get("tokenizer", "vqvae")  # the model type that made the codes
        self.tokens = PALETTE_TOKENS if self.tokenizer == "palette" else None  # a scores' note
        self.same_as_training = entry.get("same_as_training")  # why these are the training images' codes, or None
        self.num_symbols = grids[level]["num_symbols"]
        self.shape = (1, *grids[level]["shape"])  # (1, h, w)
        self.codes = load_array(self.folder, entry["files"][level], CODE_DTYPE, 3)  # uint16 (N, h, w)
        self.labels = load_array(self.folder, entry["labels"], np.int64, 1)  # int64 (N,)
        self.context_symbols = self.context_shape = self.contexts = None
        if context is not None:
            self.context_symbols = grids[context]["num_symbols"]
            self.context_shape = tuple(grids[context]["shape"])  # (h', w')
            self.contexts = load_array(self.folder, entry["files"][context], CODE_DTYPE, 3)  # uint16 (N, h', w')
        if len(self.codes) != entry["count"] or len(self.labels) != entry["count"]:
            raise ValueError(f"{self.folder}: the {split} files do not hold the {entry['count']} items "
                             f"the manifest promises; encode the split again")

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index: int):
        codes = torch.from_numpy(self.codes[index].astype(np.int64))[None]  # (1, h, w)
        label = int(self.labels[index])
        if self.contexts is None:
            return codes, label
        return codes, label, torch.from_numpy(self.contexts[index].astype(np.int64))  # (h', w')

    def check_prior(self, prior: Any) -> None:
        """Raise unless ``prior`` models this level's grids (shape, symbols, context)."""
        spec = prior.spec
        if spec.symbols != "codes" or tuple(spec.shape) != self.shape or spec.num_symbols != self.num_symbols:
            raise CodesMismatchError(
                f"the prior models {spec.symbols} {tuple(spec.shape)} of {spec.num_symbols} symbols, but "
                f"{self.folder} ({self.level}) holds codes {self.shape} of {self.num_symbols} symbols")
        context = (spec.context_symbols, spec.context_shape and tuple(spec.context_shape))
        if context != (self.context_symbols, self.context_shape):
            raise CodesMismatchError(f"the prior takes the context {context[1]} of {context[0]} symbols, but "
                                     f"the codes give {self.context_shape} of {self.context_symbols}")

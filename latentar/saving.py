"""Models save as a folder: ``config.json`` (what to build) + ``model.safetensors`` (weights).

Loading never unpickles anything: the config names a registered model type, the type
rebuilds itself from plain JSON, and the weights come from safetensors. Nothing a
damaged or hostile folder holds is trusted before it is checked, in this order: the
sha256 of the weights that ``config.json`` records, the config values (checked by the
model's own config classes), the tensor names and shapes of the safetensors header
against the model built on the meta device (no memory), and finally the weights
themselves, which must be finite. Both files must be regular files in the folder (a link
or a FIFO in their place is refused, never followed or read forever), and config.json is
read only up to 1 MiB. Extra files in the folder are ignored.

Where a model lives (`model_folder`): its folder, a run's stage folder that holds it in ``model/``
(``runs/main/prior``), or a Hub repo, ``hf://user/repo[@revision]`` (`latentar.hub`), whose snapshot
is checked like any local folder.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import warnings
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from latentar.devices import resolve_device
from latentar.files import BadFileError, atomic_write_bytes, atomic_write_json, is_regular_file, open_regular, read_json
from latentar.hub import is_hub_location, snapshot
from latentar.memory import check_fits
from latentar.registry import MODELS
from latentar.version import __version__

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MODEL_DIR = "model"  # a run's stage folder holds its exported model here (latentar.run_files)
FORMAT_VERSION = 2  # 2 records the sha256 of the weights; 1 (no checksum) still loads
SHA256_KEY = "weights_sha256"
VERSIONS_KEY = "written_by"  # {"latentar": ..., "torch": ...}: the versions that saved the model
CONFIG_KEYS = ("format_version", "model_type", "config", SHA256_KEY, VERSIONS_KEY)  # what config.json holds, at most
SHOWN = 5  # tensor names quoted in an error at most
MAX_ELEMENTS = 2**32  # ~17 GB of float32 weights and buffers; a larger model is refused before allocation

M = TypeVar("M", bound=torch.nn.Module)


class NotAModelError(ValueError):
    """A folder that does not hold a saved latentar model, or holds a damaged one."""


class NonFiniteWeightsError(ValueError):
    """A model whose weights hold NaN or inf (a diverged training): it is never saved."""


class Saveable:
    """Mixin for ``nn.Module`` models that can rebuild themselves from a JSON config."""

    model_type: ClassVar[str]

    def config_dict(self) -> dict:
        """Plain-JSON description from which ``from_config`` rebuilds an identical model."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict):
        """The model ``config`` describes; raises ValueError/TypeError naming a bad value."""
        raise NotImplementedError

    def memory_floor(self) -> tuple[int, str]:
        """(bytes, what they are) that one use of the model needs besides its weights: one input
        at batch 1 and the activations of one forward, estimated without allocating anything
        (``latentar.memory``); the model may live on the meta device."""
        raise NotImplementedError

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``model.safetensors`` then ``config.json`` (recording the weights' sha256) into
        ``folder``, each file atomically. Raises ``NonFiniteWeightsError`` if a weight is NaN or inf."""
        assert isinstance(self, torch.nn.Module)  # a mixin of nn.Module models
        folder = Path(folder)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        bad = non_finite(state)
        if bad:
            raise NonFiniteWeightsError(f"refusing to save a {type(self).__name__} whose weights hold NaN "
                                        f"or inf: {quote(bad)}")
        data = safetensors_bytes(state, metadata={"format": "pt"})
        atomic_write_bytes(folder / WEIGHTS_FILE, data)
        config = {"format_version": FORMAT_VERSION, "model_type": self.model_type, VERSIONS_KEY: versions(),
                  "config": self.config_dict(), SHA256_KEY: hashlib.sha256(data).hexdigest()}
        atomic_write_json(folder / CONFIG_FILE, config)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device = "cpu", *,
                        verify: bool = True):
        """``load(folder, device, verify=verify)``, checked to hold a ``cls``."""
        model = load(folder, device, verify=verify)
        if not isinstance(model, cls):
            raise NotAModelError(f"{folder} holds a {type(model).__name__}, not a {cls.__name__}")
        return model


def versions() -> dict[str, str]:
    """The versions of latentar and torch in this process, as a saved model records them."""
    return {"latentar": __version__, "torch": torch.__version__}


def meta_model(make: Callable[[], M], what: str, fields: Any = None) -> M:
    """Build ``make()`` on the meta device (no memory, no work) -> that model, refused with a
    ValueError when its parameters and buffers hold more than ``MAX_ELEMENTS`` values, before
    a real build tries to allocate them.

    Sizes so large that torch's size arithmetic overflows (a RuntimeError or a TypeError whose
    message says so, the latter with a C++ frame dump) become a one-line ValueError that
    names the largest integer among ``fields`` (the config values ``make`` builds from: a
    dict, nested dicts / lists allowed), e.g. ``pixelcnn.hidden = 4611686018427387904``."""
    try:
        with torch.device("meta"):
            model = make()
    except (RuntimeError, TypeError) as e:
        if "overflow" not in str(e).lower():
            raise
        culprit = max(integer_fields(fields), key=lambda item: item[1], default=None)
        named = f" with {culprit[0]} = {culprit[1]}" if culprit else ""
        raise ValueError(f"{what} is too large to build{named}: a tensor size overflows torch's 64-bit size "
                         "arithmetic; choose smaller sizes") from None
    count = sum(t.numel() for t in itertools.chain(model.parameters(), model.buffers()))
    if count > MAX_ELEMENTS:
        raise ValueError(f"{what} would hold {count:.3g} weights and buffer values, more than the "
                         f"{MAX_ELEMENTS:.3g} latentar builds; choose smaller sizes")
    return model


def integer_fields(value: Any, path: str = "") -> list[tuple[str, int]]:
    """(dotted path, value) of every integer in nested dicts, lists and tuples (bools excepted):
    {"arch": {"hidden": 32}, "shape": [1, 28, 28]} -> [("arch.hidden", 32), ("shape[0]", 1), ...]."""
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in integer_fields(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, (list, tuple)):
        return [item for i, v in enumerate(value) for item in integer_fields(v, f"{path}[{i}]")]
    return [(path, value)] if isinstance(value, int) and not isinstance(value, bool) else []


def read_config(folder: str | os.PathLike) -> dict:
    """The parsed ``config.json`` of a saved model folder, checked for the expected keys."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotAModelError(f"{folder} is not a folder; expected a saved model folder "
                             f"with {CONFIG_FILE} and {WEIGHTS_FILE}")
    path = folder / CONFIG_FILE
    if not os.path.lexists(path):
        raise NotAModelError(f"{folder} is not a saved model: {CONFIG_FILE} is missing")
    try:
        config = read_json(path)
    except BadFileError as e:
        raise NotAModelError(str(e)) from e
    for key in ("model_type", "config"):
        if not isinstance(config, dict) or key not in config:
            raise NotAModelError(f"{path} has no {key!r} entry; it was not written by latentar")
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise NotAModelError(f"{path} has unknown top-level key(s) {unknown}; it holds only {list(CONFIG_KEYS)}")
    version = config.get("format_version")
    if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
        raise NotAModelError(f"{path} has format_version {version!r}; this latentar reads versions "
                             f"1 to {FORMAT_VERSION}")
    if version >= 2 and not isinstance(config.get(SHA256_KEY), str):
        raise NotAModelError(f"{path} has no {SHA256_KEY!r} entry, which format {version} requires")
    return config


def model_folder(location: str | os.PathLike) -> Path:
    """The folder of the saved model at ``location``: a model folder, a run's stage folder holding one
    in ``model/``, or ``hf://user/repo[@revision]``: the repo's snapshot (or its ``model/``), fetched
    by `latentar.hub.snapshot`."""
    folder = snapshot(str(location)) if is_hub_location(location) else Path(location)
    if not (folder / CONFIG_FILE).is_file() and (folder / MODEL_DIR / CONFIG_FILE).is_file():
        return folder / MODEL_DIR
    if is_hub_location(location) and not (folder / CONFIG_FILE).is_file():
        raise NotAModelError(f"{location} holds no saved latentar model: its snapshot ({folder}) has no "
                             f"{CONFIG_FILE}, in its top folder or in {MODEL_DIR}/")
    return folder


def load(folder: str | os.PathLike, device: str | torch.device = "cpu", *, verify: bool = True):
    """Load any saved latentar model (a prior or a VQ-VAE) from where it is (`model_folder`): its
    folder, a run's stage folder, or a Hub repo ``hf://user/repo[@revision]``, onto ``device``
    ("auto", "cpu", "cuda", "cuda:N" or a torch.device; ``latentar.devices.resolve_device``): the weights are
    read straight onto it.

    Raises ``NotAModelError`` for a folder that is not a saved model, or a damaged one:
    weights that do not match the sha256 in ``config.json``, a bad config value, tensor
    names or shapes that do not fit the model the config describes (checked from the
    safetensors header before any tensor is allocated), or NaN/inf weights.
    ``verify=False`` skips the sha256 check, which reads the whole weights file once;
    every other check still runs. A format-1 folder records no sha256 and loads with a
    warning that it cannot be verified. A config whose sizes need more than the memory cap
    of ``device`` for the weights, one input and one forward at batch 1 (grid sizes
    do not change conv weights, so the header check alone passes them) raises
    ``latentar.memory.MemoryCapError`` before anything is allocated.
    """
    device = resolve_device(device)
    folder = model_folder(folder)
    config = read_config(folder)
    weights = folder / WEIGHTS_FILE
    if not os.path.lexists(weights):
        raise NotAModelError(f"{folder} is not a saved model: {WEIGHTS_FILE} is missing")
    if not is_regular_file(weights):
        raise NotAModelError(f"{weights} is not a regular file (a link, folder, FIFO or device); a saved model's "
                             "files are regular files inside its folder")
    if verify:
        verify_weights(weights, config.get(SHA256_KEY))
    try:
        make = functools.partial(MODELS.get(config["model_type"]).from_config, config["config"])
        skeleton = meta_model(make, "it", {"config": config["config"]})
    except (ValueError, TypeError, LookupError) as e:
        raise NotAModelError(f"{folder / CONFIG_FILE} does not describe a model latentar can build: "
                             f"{e}") from e
    check_header(weights, read_header(weights), skeleton.state_dict())
    floor, made_of = skeleton.memory_floor()
    weights_bytes = sum(t.numel() * t.element_size() for t in itertools.chain(skeleton.parameters(),
                                                                              skeleton.buffers()))
    check_fits(weights_bytes + floor, f"loading {folder} (the sizes in its {CONFIG_FILE})", device,
               f"its weights and {made_of}")
    with device:  # built where its weights land
        model = make()
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError) as e:
        raise NotAModelError(f"{weights} is damaged or not a safetensors file: {e}") from e
    bad = non_finite(state)
    if bad:
        raise NotAModelError(f"{weights} holds NaN or inf weights (a diverged model); refusing to load {quote(bad)}")
    model.load_state_dict(state)
    return model.to(device)


def verify_weights(weights: Path, expected: str | None) -> None:
    """The file's sha256 must be ``expected`` (None: a format-1 folder, only warned about)."""
    if expected is None:
        warnings.warn(f"{weights.parent} was saved in format 1, which records no sha256 of "
                      f"{WEIGHTS_FILE}: it cannot be verified; save it again to record one", stacklevel=3)
        return
    digest = hashlib.sha256()
    try:
        with open_regular(weights) as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except BadFileError as e:
        raise NotAModelError(str(e)) from e
    found = digest.hexdigest()
    if found != expected:
        raise NotAModelError(f"{weights} does not match the sha256 that {CONFIG_FILE} records "
                             f"(the file is damaged or was replaced): expected {expected}, found {found}")


def read_header(weights: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from the safetensors header alone (no tensor is read)."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError) as e:
        raise NotAModelError(f"{weights} is damaged or not a safetensors file: {e}") from e


def check_header(weights: Path, header: dict[str, tuple[int, ...]], expected: dict[str, torch.Tensor]) -> None:
    """The header's tensor names and shapes must be those of the ``expected`` state dict."""
    problems = []
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    wrong = [f"{k} {header[k]} (the config builds {tuple(expected[k].shape)})"
             for k in sorted(set(expected) & set(header)) if header[k] != tuple(expected[k].shape)]
    for what, names in (("missing", missing), ("unexpected", unexpected), ("wrong shapes", wrong)):
        if names:
            problems.append(f"{what}: {quote(names)}")
    if problems:
        raise NotAModelError(f"{weights} does not match the model {CONFIG_FILE} describes; "
                             + "; ".join(problems))


def non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors in ``state`` that hold NaN or inf."""
    return [name for name, t in state.items()
            if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all())]


def quote(names: list[str]) -> str:
    """At most ``SHOWN`` names, and how many more: 'a, b, c (and 4 more)'."""
    more = f" (and {len(names) - SHOWN} more)" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more

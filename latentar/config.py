"""Recipes: one TOML file that names the data, the VQ-VAE, the prior(s), their training and
the sampling of a run. TOML in (``load_recipe``), JSON out (``recipe_to_dict``).

    [data]          name, root, options, train_limit, test_limit
    [vqvae]         VQVAEConfig fields, or path = "a trained VQ-VAE (or palette) folder"   (absent: pixel mode)
    [vqvae_train]   TrainConfig fields of the VQ-VAE stage
    [palette]       PaletteConfig fields: Image GPT's colour palette, fitted to the training images,
                    as the tokenizer instead of a VQ-VAE (one token per pixel)
    [prior]         name, preset, head, head_options, class_conditional, embed_dim, arch = {...}
    [prior_train]   TrainConfig fields of the prior stage
    [bottom_prior], [bottom_prior_train]   VQ-VAE-2 only: the prior of the bottom codes,
                    conditioned on the top codes (``[prior]`` then models the top codes)
    [sampling]      n, nrow, per_class, temperature, top_k, seed, reconstructions, device, ...
    [metrics]       n, features, reference, classifier_steps, classifier_width, inception_weights, seed:
                    sample metrics
                    (FID, KID, precision/recall, class accuracy) of the prior's samples at the end

Every value is checked against its field's type and range when the recipe is read, and
``--set section.key=value`` overrides are parsed by that type; errors name the key.
`latentar.plan.validate` then checks the recipe against the data, the models and the device, so a
recipe that cannot run fails before any work starts.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import textwrap
import tokenize
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from latentar.checks import FRACTION, SEED, Bound, Checked, FieldError
from latentar.files import BadFileError, read_json, read_toml
from latentar.images import MAX_NROW
from latentar.training import TrainConfig
from latentar.vqvae import VQVAE, PaletteConfig, VQVAEConfig


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the offending key."""


@dataclass
class DataConfig(Checked):
    label = "data"

    name: str = "mnist"  # a registered dataset (latentar.data.DATASETS)
    root: str | None = None  # data root (image_folder: the folder of images); None: the default
    options: dict = field(default_factory=dict)  # dataset options, e.g. size = 32, test_fraction = 0.1 (image_folder)
    train_limit: int | None = None  # use the first N training images only (quick runs)
    test_limit: int | None = None  # evaluate on the first N test images only


@dataclass
class PriorConfig(Checked):
    """A prior to train, as a recipe's ``[prior]`` section and ``train-prior``'s flags give it: its
    ``name``, ``preset`` and ``arch`` overrides, the `PriorSpec` fields a user chooses (``head``,
    ``head_options``, ``embed_dim``, ``class_dropout``, spelled as there) and ``class_conditional``.
    The data decide the rest of the spec (`build_arguments`)."""

    label = "prior"
    bounds = {"class_dropout": FRACTION}

    name: str = "pixelsnail"  # a registered prior (latentar.list_priors())
    preset: str | None = "small"  # a preset of that prior ("tiny", "small", ..., "paper")
    head: str = "categorical"  # "categorical" or "logistic_mixture" (pixels only)
    head_options: dict = field(default_factory=dict)  # head arguments, e.g. num_mixtures = 10 for logistic_mixture
    class_conditional: bool = False  # condition on the dataset's labels
    embed_dim: int = 32  # code embedding width (code mode)
    class_dropout: float = 0.0  # > 0: a null class for classifier-free guidance (class-conditional only)
    arch: dict = field(default_factory=dict)  # overrides of the preset's architecture fields

    def build_arguments(self, grid: dict, num_classes: int | None, augmentations: tuple[str, ...] = ()) -> dict:
        """The keyword arguments of `latentar.build_prior` for this prior on the symbol ``grid``
        (``shape`` (C, H, W) and ``num_symbols``; code grids add ``symbols="codes"`` and, under a
        spatial context, ``context_symbols`` and ``context_shape``) of data with ``num_classes``
        labels (None: unlabelled), conditioned on the ids of ``augmentations`` (its training's
        `TrainConfig.prior_augmentations`). ``embed_dim`` applies to code grids only."""
        if self.class_conditional and not num_classes:
            raise ValueError("class_conditional = true, but the data has no class labels")
        codes = {"embed_dim": self.embed_dim} if grid.get("symbols") == "codes" else {}
        return dict(name=self.name, head=self.head, head_options=self.head_options, preset=self.preset,
                    num_classes=num_classes if self.class_conditional else None, class_dropout=self.class_dropout,
                    augmentations=augmentations,
                    **codes, **self.arch, **grid)


MAX_RECONSTRUCTIONS = 4096  # test images in the reconstruction grid


@dataclass
class SamplingConfig(Checked):
    label = "sampling"
    bounds = {"seed": SEED, "reconstructions": Bound(0, MAX_RECONSTRUCTIONS), "top_p": Bound(0.0, 1.0),
              "nrow": Bound(1, MAX_NROW)}

    n: int = 64  # images in the sample grid (unconditional priors)
    nrow: int = 8  # images per grid row
    per_class: int = 8  # class-conditional priors: one row per class with this many images
    temperature: float = 1.0  # scales each symbol's conditional log-probabilities (1 = the model)
    top_k: int | None = None  # keep only the k most likely symbols of each draw
    top_p: float | None = None  # nucleus: the smallest set of values whose probability reaches p
    cfg_scale: float = 1.0  # classifier-free guidance scale (needs prior.class_dropout > 0)
    seed: int = 0  # seed of the sampling generator
    reconstructions: int = 32  # test images in the VQ-VAE reconstruction grid
    device: str = "auto"  # where the run draws samples and reconstructions and scores a vqvae.path:
    # auto (CUDA when available, else the CPU), cpu, cuda or cuda:N; training runs where Accelerate puts it

    def __post_init__(self):
        super().__post_init__()  # types, sizes >= 1, finite numbers
        if self.temperature <= 0:
            raise FieldError(f"sampling.temperature must be a finite number > 0, got {self.temperature!r}")
        if self.top_p is not None and self.top_p <= 0:
            raise FieldError(f"sampling.top_p must be a number in (0, 1] or None, got {self.top_p!r}")


METRICS_FEATURES = "classifier"  # [metrics] features = "classifier": the recipe trains the dataset classifier


@dataclass
class MetricsConfig(Checked):
    """Sample metrics at the end of a run (`latentar.quality`): n samples drawn with [sampling]'s
    knobs, measured against the reference split in the features of a classifier the run trains
    (RUN/classifier/), of a given classifier, or of Inception."""

    label = "metrics"
    bounds = {"n": Bound(0, None), "reference": ("test", "train"), "seed": SEED, "classifier_steps": Bound(1, None),
              "classifier_width": Bound(1, 1024)}

    n: int = 0  # samples drawn and measured (and reference images); 0 = no sample metrics
    features: str = METRICS_FEATURES  # "classifier" (trained in RUN/classifier/), "classifier:PATH" or "inception"
    reference: str = "test"  # the split the samples are compared with
    classifier_steps: int = 300  # updates of the classifier trained for features = "classifier"
    classifier_width: int = 16  # its first convolutions' channels (ClassifierConfig.width): 16 trains 2× faster than 32
    inception_weights: str | None = None  # features = "inception": the weights file; None: torch-fidelity's cache
    seed: int = 0  # seed of the measured draws (the same for every run, so runs compare)


@dataclass
class Recipe:
    data: DataConfig = field(default_factory=DataConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    prior_train: TrainConfig = field(default_factory=TrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    vqvae: VQVAEConfig | None = None  # a VQ-VAE to train; None with vqvae_path or in pixel mode
    vqvae_path: str | None = None  # an already trained VQ-VAE (or fitted palette) folder ([vqvae] path = ...)
    vqvae_train: TrainConfig | None = None
    bottom_prior: PriorConfig | None = None  # VQ-VAE-2: the bottom prior, context = top codes
    bottom_prior_train: TrainConfig | None = None
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    palette: PaletteConfig | None = None  # a colour palette to fit, the tokenizer instead of a VQ-VAE

    @property
    def mode(self) -> str:
        """"codes" (two-stage) or "pixels" (the prior models the images themselves)."""
        return "pixels" if self.vqvae is None and self.vqvae_path is None and self.palette is None else "codes"


SECTIONS: dict[str, type] = {
    "data": DataConfig, "vqvae": VQVAEConfig, "vqvae_train": TrainConfig, "prior": PriorConfig,
    "prior_train": TrainConfig, "bottom_prior": PriorConfig, "bottom_prior_train": TrainConfig,
    "sampling": SamplingConfig, "metrics": MetricsConfig, "palette": PaletteConfig,
}
REQUIRED = ("data", "prior", "prior_train")
PATH_KEY = "path"  # [vqvae] path = FOLDER: reuse a trained VQ-VAE
PRESET_KEY = "preset"  # [vqvae] preset = "mnist": start from a VQ-VAE preset, fields override it


# ---- reading -------------------------------------------------------------------------
def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read a recipe (``.toml``, or a resolved ``recipe.json``) and apply ``--set`` overrides."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"recipe {path} does not exist")
    try:
        raw = read_json(path, follow=True) if path.suffix == ".json" else read_toml(path, follow=True)
    except BadFileError as e:
        raise RecipeError(f"recipe {e}") from e
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path} must hold tables of settings, got {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item)
    return recipe_from_dict(raw)


def recipe_from_dict(raw: dict) -> Recipe:
    """Sections as nested dicts (the TOML layout) -> a checked `Recipe`."""
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise RecipeError(f"unknown section [{unknown[0]}]; sections: {', '.join(SECTIONS)}")
    for name in REQUIRED:
        if name not in raw:
            raise RecipeError(f"the recipe has no [{name}] section")
    sections = {}
    for name, values in raw.items():
        if not isinstance(values, dict):
            raise RecipeError(f"{name} must be a section ([{name}]), got {values!r}")
        values = dict(values)
        if name == "vqvae" and PATH_KEY in values:
            path = values.pop(PATH_KEY)
            if values:
                raise RecipeError(f"vqvae.path reuses a trained VQ-VAE; vqvae.{sorted(values)[0]} "
                                  f"cannot change it (remove one of the two)")
            sections["vqvae_path"] = check_value(path, str, "vqvae.path")
            continue
        if name == "vqvae" and PRESET_KEY in values:
            sections[name] = vqvae_from_preset(values)
            continue
        sections[name] = build_section(SECTIONS[name], values, name)
    recipe = Recipe(**sections)
    check_sections(recipe, raw)
    return recipe


def check_sections(recipe: Recipe, raw: dict) -> None:
    """Sections that belong together: a trained VQ-VAE needs its training, and so on."""
    if recipe.mode == "pixels":
        for name in ("vqvae_train", "bottom_prior", "bottom_prior_train"):
            if name in raw:
                raise RecipeError(f"[{name}] needs a [vqvae] section (a pixel-mode recipe has none)")
    if recipe.palette is not None and (recipe.vqvae is not None or recipe.vqvae_path is not None):
        raise RecipeError("[palette] and [vqvae] are two tokenizers; a recipe takes one of them")
    if recipe.palette is not None and "vqvae_train" in raw:
        raise RecipeError("[vqvae_train] has nothing to train: a [palette] is fitted, not trained")
    if recipe.vqvae is not None and recipe.vqvae_train is None:
        raise RecipeError("[vqvae] trains a VQ-VAE but the recipe has no [vqvae_train] section")
    if recipe.vqvae_train is not None and recipe.vqvae_train.augment:
        raise RecipeError("vqvae_train.augment: distribution augmentation is for prior training ([prior_train])")
    if recipe.vqvae_path is not None and "vqvae_train" in raw:
        raise RecipeError("[vqvae_train] has nothing to train: vqvae.path reuses a trained VQ-VAE")
    if (recipe.bottom_prior is None) != (recipe.bottom_prior_train is None):
        raise RecipeError("[bottom_prior] and [bottom_prior_train] go together; one is missing")


def vqvae_from_preset(values: dict) -> VQVAEConfig:
    """[vqvae] with ``preset``: the preset's fields, then the section's own."""
    preset = check_value(values.pop(PRESET_KEY), str, "vqvae.preset")
    if preset not in VQVAE.presets:
        raise RecipeError(f"vqvae.preset {preset!r} is unknown; presets: {', '.join(VQVAE.presets)}")
    checked = vars(build_section(VQVAEConfig, values, "vqvae"))  # types and unknown keys
    return build_section(VQVAEConfig, {**VQVAE.presets[preset], **{k: checked[k] for k in values}}, "vqvae")


def build_section(cls: type, values: dict, section: str):
    """A dict of TOML values -> the dataclass ``cls``, each value checked against its field."""
    hints = field_types(cls)
    for key in values:
        if key not in hints:
            raise RecipeError(f"unknown key {section}.{key}; [{section}] takes: {', '.join(hints)}")
    kwargs = {key: check_value(value, hints[key], f"{section}.{key}") for key, value in values.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise section_error(e, cls, section) from e


def section_error(error: Exception, cls: type, section: str) -> RecipeError:
    """The error of building ``cls`` from [section], naming the key: a checked field calls
    itself ``<label>.<field>`` (e.g. ``prior.embed_dim`` for [bottom_prior]), which becomes
    ``<section>.<field>``; any other message gets the section in front."""
    text, label = str(error), getattr(cls, "label", None)
    if label and text.startswith(f"{label}."):
        return RecipeError(section + text[len(label):])
    return RecipeError(f"[{section}]: {text}")


def field_types(cls: type) -> dict[str, Any]:
    """{field name: its type} of a dataclass, in field order (class variables left out)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def field_comments(cls: type) -> dict[str, str]:
    """{field name: its trailing comment} of a dataclass, read from its source (a comment's
    continuation lines joined): the help text of the field's command-line flag."""
    comments: dict[str, str] = {}
    for owner in reversed(cls.__mro__):  # a subclass's comment wins
        names = set(getattr(owner, "__dataclass_fields__", ()))
        if not names:
            continue
        current = None
        source = textwrap.dedent(inspect.getsource(owner))
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.NAME and token.start[1] == 4:  # a statement of the class body
                current = token.string if token.string in names else None
                if current is not None:
                    comments.pop(current, None)
            elif token.type == tokenize.COMMENT and current is not None:
                comments[current] = f"{comments.get(current, '')} {token.string.lstrip('#').strip()}".strip()
    return comments


def check_value(value: Any, tp: Any, key: str) -> Any:
    """A TOML/JSON value checked (and widened: int -> float, list -> tuple) against type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return check_value(value, option, key)
            except RecipeError:
                continue
        raise RecipeError(f"{key} must be {type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise RecipeError(f"{key} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{key} must be {type_name(tp)}, got {value!r}")
        item = args[0] if args and (origin is list or args[-1] is Ellipsis) else None
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise RecipeError(f"{key} must have {len(args)} items, got {value!r}")
            return tuple(check_value(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        items = [v if item is None else check_value(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{key} must be a table ({{key = value, ...}}), got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is Any:
        return value
    if isinstance(tp, type) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise RecipeError(f"{key} must be {type_name(tp)}, got {value!r} ({type(value).__name__})")
    return value


def type_name(tp: Any) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args) + (" (or none)" if len(args) < len(typing.get_args(tp)) else "")
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a table"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


# ---- --set overrides -----------------------------------------------------------------
def apply_override(raw: dict, item: str) -> None:
    """Apply ``section.key=value`` (or ``section.key.subkey=value`` inside a table) to raw sections.

    The text is parsed by the field's type: strings are taken as written, ``none``
    clears an optional field, everything else is read as a TOML value (``3``, ``0.5``,
    ``true``, ``[1, 2]``, ``{hidden = 64}``).
    """
    try:
        dotted, text = split_assignment(item, "--set", "section.key=value")
    except ValueError as e:
        raise RecipeError(str(e)) from None
    parts = dotted.split(".")
    if len(parts) < 2 or not all(parts):
        raise RecipeError(f"--set expects section.key=value, got {item!r}")
    section, key, *inner = parts
    if section not in SECTIONS:
        raise RecipeError(f"--set {dotted}: unknown section [{section}]; sections: {', '.join(SECTIONS)}")
    hints = {PATH_KEY: str | None, PRESET_KEY: str} if section == "vqvae" else {}
    hints.update(field_types(SECTIONS[section]))
    if key not in hints:
        raise RecipeError(f"--set {dotted}: unknown key {section}.{key}; [{section}] takes: "
                          f"{', '.join(hints)}")
    tp = Any if inner else hints[key]
    value = parse_text(text, tp)
    target = raw.setdefault(section, {})
    for name in [key, *inner][:-1]:
        target = target.setdefault(name, {})
        if not isinstance(target, dict):
            raise RecipeError(f"--set {dotted}: {section}.{name} is not a table")
    target[[key, *inner][-1]] = value


def split_assignment(item: str, flag: str, form: str = "KEY=VALUE") -> tuple[str, str]:
    """``"key = value"`` given to ``flag`` -> ``("key", "value")``, both stripped; the one
    splitter of every command-line assignment (``--set``, ``--arch``, ``--data-option``)."""
    key, sep, text = (part.strip() for part in item.partition("="))
    if not sep or not key:
        raise ValueError(f"{flag} expects {form}, got {item!r}")
    return key, text


def parse_text(text: str, tp: Any = Any) -> Any:
    """Command-line text -> a value for a field of type ``tp`` (checked later by `check_value`);
    the one literal rule of every command-line value: ``none`` / ``null`` is None where ``tp``
    allows it (``Any`` does), a string field takes the text as written, anything else is read
    as a TOML value (``3``, ``0.5``, ``true``, ``[1, 2]``, ``{hidden = 64}``), else kept as text."""
    args = typing.get_args(tp)
    if text.lower() in ("none", "null") and (tp is Any or type(None) in args):
        return None
    if tp is str or str in args:
        return text
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except (tomllib.TOMLDecodeError, RecursionError, ValueError):  # ValueError: an integer too long to convert
        return text  # not a TOML value: check_value reports the type mismatch


# ---- writing -------------------------------------------------------------------------
def recipe_to_dict(recipe: Recipe) -> dict:
    """The recipe in its TOML layout (absent sections left out), ready for JSON."""
    out = {}
    for name in SECTIONS:
        value = getattr(recipe, name)
        if value is not None:
            out[name] = jsonable(dataclasses.asdict(value))
    if recipe.vqvae_path is not None:
        out["vqvae"] = {PATH_KEY: recipe.vqvae_path}
    return out


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value

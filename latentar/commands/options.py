"""Options the commands share: flags generated from the config dataclasses (`add_settings`:
`TrainConfig`, `PriorConfig`, `DataConfig`, `VQVAEConfig`, one flag per field), a prior described
by flags, the sampling knobs, saved-model folders, and the one KEY=VALUE parser (the literal
rule of ``latentar.config.parse_text``, used by ``--set``, ``--arch`` and ``--data-option``)."""

from __future__ import annotations

import argparse
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import torch
from accelerate import PartialState

from latentar.checks import SEED, check_value
from latentar.config import DataConfig, PriorConfig, field_comments, field_types, parse_text, split_assignment
from latentar.devices import DEVICE_HELP, resolve_device
from latentar.memory import ENV_VAR, parse_size
from latentar.priors.base import Prior, build_prior
from latentar.runs import Rerun
from latentar.saving import load
from latentar.training import TrainConfig

PRIOR_FLAGS = {"name": "prior"}  # PriorConfig fields whose flag has another name: --prior NAME
DATA_FLAGS = {"root": "data_root", "options": "data_option"}  # DataConfig's: --data-root, --data-option
PRIOR_CHOICE = ("name", "preset", "head", "arch")  # the PriorConfig fields that pick an architecture (bench, ...)
M = TypeVar("M", bound=torch.nn.Module)  # the kind of saved model a flag names


# ---- flags generated from config dataclasses -------------------------------------------
def add_settings(parser: argparse.ArgumentParser, cls: type, defaults: Mapping[str, Any] | None = None, *,
                 only: tuple[str, ...] | None = None, flags: Mapping[str, str] = {},
                 required: tuple[str, ...] = ()) -> None:
    """One flag per field of the dataclass ``cls`` (those in ``only``, default all), as
    improved-diffusion's ``add_dict_to_argparser`` does: ``--field-name`` (``flags`` renames a
    field, e.g. {"name": "prior"}), typed by the field's annotation (`flag_options`), defaulting
    to its value in ``defaults`` (e.g. ``asdict(TrainConfig())``; None: to None, "not given"),
    with the field's comment as help (`field_comments`). A new field of ``cls`` is a new flag."""
    hints, comments, bounds = field_types(cls), field_comments(cls), getattr(cls, "bounds", {})
    for name in only or tuple(hints):
        dest = flags.get(name, name)
        options = flag_options(hints[name], bounds.get(name), None if defaults is None else defaults[name])
        shown = "" if name in required or options["default"] in (None, False, [], ()) else " (default: %(default)s)"
        parser.add_argument("--" + dest.replace("_", "-"), dest=dest, required=name in required,
                            help=comments.get(name, "").replace("%", "%%") + shown, **options)


def flag_options(tp: Any, rule: Any, default: Any) -> dict:
    """argparse's options for a field of type ``tp`` (int, float, str, bool, dict, tuple[str, ...],
    or one of them or None) under its ``rule`` (`latentar.checks.Rule`: a tuple of strings becomes the
    choices): a bool is a switch (``--no-...`` turns off one that is on by default); a dict takes
    KEY=VALUE items (`settings` parses them), repeats adding up; a tuple of strings is comma-separated."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    kind = args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1 else tp
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction if default else "store_true", "default": default}
    if kind == tuple[str, ...]:
        return {"type": comma_separated, "default": default, "metavar": "A,B"}
    if kind is dict:
        items = None if default is None else [f"{key}={value}" for key, value in default.items()]
        return {"nargs": "*", "action": "extend", "metavar": "KEY=VALUE", "default": items}
    if kind not in (int, float, str):
        raise TypeError(f"a field of type {tp} has no command-line flag")
    return {"type": kind, "default": default, "choices": rule if isinstance(rule, tuple) else None}


def comma_separated(text: str) -> tuple[str, ...]:
    """'rot90,transpose' -> ('rot90', 'transpose'); '' -> ()."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def settings(args: argparse.Namespace, cls: type, *, only: tuple[str, ...] | None = None,
             flags: Mapping[str, str] = {}) -> dict:
    """The values of the `add_settings` flags of ``cls`` -> {field: value}, KEY=VALUE items parsed to a dict."""
    values = {name: getattr(args, flags.get(name, name)) for name in only or tuple(field_types(cls))}
    return {name: parse_assignments(value, "--" + flags.get(name, name).replace("_", "-"))
            if isinstance(value, list) else value for name, value in values.items()}


def add_data_root(parser: argparse.ArgumentParser) -> None:
    """--data-root: `DataConfig.root`."""
    add_settings(parser, DataConfig, asdict(DataConfig()), only=("root",), flags=DATA_FLAGS)


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """--data-root and --data-option: `DataConfig.root` and ``options``."""
    add_settings(parser, DataConfig, asdict(DataConfig()), only=("root", "options"), flags=DATA_FLAGS)


def data_config(args: argparse.Namespace) -> DataConfig:
    """The `DataConfig` of ``--data``, the `add_data_options` flags and, on the commands that train,
    ``--test-limit`` (`add_run_folder_options`)."""
    fields = ("root", "options", *(("test_limit",) if "test_limit" in vars(args) else ()))
    return DataConfig(name=args.data, **settings(args, DataConfig, only=fields, flags=DATA_FLAGS))


def parse_assignments(items: list[str], flag: str = "--arch") -> dict:
    """["hidden=32", "dropout=0.5", "name=x", "size=none"] -> {"hidden": 32, "dropout": 0.5,
    "name": "x", "size": None}: each value read by the one literal rule (``parse_text``)."""
    return {key: parse_text(text) for key, text in (split_assignment(item, flag) for item in items)}


def add_max_memory(parser: argparse.ArgumentParser) -> None:
    """--max-memory SIZE: the memory cap of this command (``latentar.memory``), applied by ``cli.main``."""
    parser.add_argument("--max-memory", type=max_memory_size, default=None, metavar="SIZE",
                        help=f"refuse work estimated to need more memory than SIZE, e.g. 8GB or 512MiB; larger "
                             f"requests run in batches that fit where they can (default: {ENV_VAR}, else 80%% "
                             f"of the device's memory)")


def max_memory_size(text: str) -> str:
    """The text of --max-memory, checked to be a size (``latentar.memory.parse_size``)."""
    try:
        parse_size(text, "the value")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return text


def seed_value(text: str) -> int:
    """The text of a --seed flag -> an integer in ``SEED``'s range (that of torch.Generator)."""
    try:
        return check_value(int(text), int, "the value", SEED)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the value must be an integer {SEED}, got {text!r}") from None


def check_positive(value: int, flag: str) -> None:
    """A count given on the command line must be >= 1; checked before the work that uses it."""
    if value < 1:
        raise ValueError(f"{flag} must be an integer >= 1, got {value}")


# ---- training a model into a run folder -----------------------------------------------
def add_run_folder_options(parser: argparse.ArgumentParser, default: TrainConfig) -> None:
    """--out --resume --overwrite --subset --test-limit --eval-batch-size, and a flag per `TrainConfig`
    field with ``default``'s value."""
    parser.add_argument("--subset", type=int, default=None, help="train on the first N training images only")
    add_settings(parser, DataConfig, asdict(DataConfig()), only=("test_limit",))  # a recipe's [data] test_limit
    parser.add_argument("--out", required=True, help="run folder: metrics, checkpoints, model, summary.json")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace the earlier run's outputs in --out")
    parser.add_argument("--eval-batch-size", type=int, default=256)
    add_settings(parser, TrainConfig, asdict(default))


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The `TrainConfig` of the `add_run_folder_options` flags."""
    return TrainConfig(**settings(args, TrainConfig))


def rerun(args: argparse.Namespace) -> Rerun:
    """What --resume and --overwrite ask of a run folder that holds an earlier run."""
    return Rerun(resume=args.resume, overwrite=args.overwrite)


# ---- a prior described by flags (bench, receptive-field) ------------------------------
def parse_shape(text: str) -> tuple[int, int, int]:
    """'C,H,W' -> (C, H, W) of positive ints."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"shape must be C,H,W with positive integers, got {text!r}")
    return shape


def add_prior_settings(parser: argparse.ArgumentParser) -> None:
    """A flag per `PriorConfig` field (--prior NAME, required, --preset, --head, ..., --arch KEY=VALUE ...)."""
    add_settings(parser, PriorConfig, {**asdict(PriorConfig()), "preset": None}, flags=PRIOR_FLAGS,
                 required=("name",))


def prior_config(args: argparse.Namespace) -> PriorConfig:
    """The `PriorConfig` of the `add_prior_settings` flags."""
    return PriorConfig(**settings(args, PriorConfig, flags=PRIOR_FLAGS))


def add_prior_arguments(p: argparse.ArgumentParser, *, default_shape: str, default_symbols: int,
                        prior_required: bool = True) -> None:
    """--prior --preset --head --arch (`PriorConfig`'s flags) and the grid it models: --shape --symbols
    --codes --classes, and --device."""
    add_settings(p, PriorConfig, {**asdict(PriorConfig()), "name": None, "preset": None}, only=PRIOR_CHOICE,
                 flags=PRIOR_FLAGS, required=("name",) if prior_required else ())
    p.add_argument("--shape", type=parse_shape, default=parse_shape(default_shape),
                   help=f"C,H,W of the symbol grid (default {default_shape})")
    p.add_argument("--symbols", type=int, default=default_symbols,
                   help=f"number of symbols K (default {default_symbols})")
    p.add_argument("--codes", action="store_true", help="model codes (embedded) instead of pixels")
    p.add_argument("--classes", type=int, help="class-conditional with this many classes")
    add_device(p)


def prior_from_args(args: argparse.Namespace, name: str | None = None) -> Prior:
    """The prior the arguments describe (``name`` overrides ``--prior``), on its device."""
    prior = build_prior(name or args.prior, args.shape, args.symbols, args.head, args.classes,
                        symbols="codes" if args.codes else "pixels", preset=args.preset,
                        **parse_assignments(args.arch))
    return prior.to(resolve_device(args.device))


def add_device(parser: argparse.ArgumentParser) -> None:
    """--device auto|cpu|cuda|cuda:N (`latentar.devices.resolve_device`), default auto."""
    parser.add_argument("--device", type=device_name, default="auto", metavar="DEVICE",
                        help=f"{DEVICE_HELP} (default: %(default)s)")


def process_device(args: argparse.Namespace) -> tuple[torch.device, PartialState | None]:
    """(--device of this process, the processes it shares the work with): under ``accelerate launch``
    or torchrun (``WORLD_SIZE`` > 1) a gloo group on the CPU or NCCL on CUDA, each process on a GPU
    of its own (``resolve_device``); None for a process started alone."""
    device = resolve_device(args.device)
    alone = int(os.environ.get("WORLD_SIZE", "1")) == 1
    return device, None if alone else PartialState(cpu=device.type == "cpu")


def is_main(processes: PartialState | None) -> bool:
    """Whether this process reports for ``processes`` (`process_device`): the main one, or one alone."""
    return processes is None or processes.is_main_process


def device_name(text: str) -> str:
    """The text of --device, checked to name a device of this machine (``resolve_device``)."""
    try:
        resolve_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return text


# ---- saved models ---------------------------------------------------------------------
def load_model(location: str | Path, kind: type[M], what: str, device: torch.device | str = "cpu", *,
               refusal: str = "") -> M:
    """The model saved at ``location`` (`latentar.saving.model_folder`: a model folder, a run's stage
    folder or hf://user/repo[@revision]) on ``device``, in eval mode, checked to be a ``kind``; else a
    ValueError naming ``what`` (the flag) and ending in ``refusal`` (default: what was expected)."""
    model = load(location, device)
    if not isinstance(model, kind):
        raise ValueError(f"{what} {location} holds a {type(model).__name__}"
                         f"{refusal or f', expected a {kind.__name__}'}")
    return model.eval()


def add_sampling_knobs(parser: argparse.ArgumentParser, *, lists: bool = False) -> None:
    """--temperature --top-k --top-p --cfg-scale --seed --batch-size: the knobs of ``Prior.sample``;
    with ``lists`` the first four take comma lists of values (`knob_list`): a list when given."""
    def kind(tp: type, optional: bool = False) -> Any:
        return knob_list(tp, optional) if lists else tp

    swept = ", or a comma list of values to sweep" if lists else ""
    for flag, tp, default, text in (
            ("--temperature", float, 1.0, "softmax temperature"),
            ("--top-k", int, None, "draw among the k most likely symbols only; None: all"),
            ("--top-p", float, None, "draw among the most likely symbols whose probability reaches p (nucleus); "
                                     "None: all"),
            ("--cfg-scale", float, 1.0, "classifier-free guidance scale (a prior trained with class_dropout > 0)")):
        parser.add_argument(flag, type=kind(tp, default is None), default=default, help=text + swept)
    parser.add_argument("--seed", type=seed_value, default=0, help="seed of the draws")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="draw at most this many grids per pass; None: as many as fit the memory cap")


def knob_list(tp: type, optional: bool = False) -> Any:
    """The argparse type of a swept knob: '1,1.5,2' -> [1.0, 1.5, 2.0] of ``tp``; with ``optional``,
    'none' stands for None (the knob off)."""
    def parse(text: str) -> list:
        values = []
        for item in text.split(","):
            item = item.strip()
            try:
                values.append(None if optional and item.lower() == "none" else tp(item))
            except ValueError:
                kind = "integers" if tp is int else "numbers"
                raise argparse.ArgumentTypeError(f"expected a comma list of {kind}{' or none' if optional else ''}, "
                                                 f"e.g. 1,2,3; {item!r} in {text!r} is not one") from None
        if len(set(values)) < len(values):
            raise argparse.ArgumentTypeError(f"{text!r} repeats a value")
        return values
    return parse


def check_sampling_knobs(args: argparse.Namespace) -> None:
    """The ``add_sampling_knobs`` counts, checked before the work that uses them."""
    if args.batch_size is not None:
        check_positive(args.batch_size, "--batch-size")


def sampling_knobs(args: argparse.Namespace) -> dict:
    """The ``add_sampling_knobs`` flags as keyword arguments of `generate` / `complete`."""
    return dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, cfg_scale=args.cfg_scale,
                seed=args.seed, batch_size=args.batch_size)

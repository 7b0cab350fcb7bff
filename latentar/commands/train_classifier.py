"""``latentar train-classifier``: train the dataset classifier whose features ``latentar
eval-samples --features classifier:PATH`` compares, and record its test accuracy."""

from __future__ import annotations

import json
from dataclasses import asdict

from accelerate import PartialState

from latentar.classifier import ClassifierConfig
from latentar.commands.options import (
    add_data_options,
    add_run_folder_options,
    add_settings,
    data_config,
    rerun,
    settings,
    train_config,
)
from latentar.runs.classifier import train_classifier
from latentar.training import TrainConfig

ARCH_FLAGS = ("width", "feature_dim")  # the ClassifierConfig fields a user chooses; the data sets the others


def add_train_classifier_command(subparsers) -> None:
    parser = subparsers.add_parser("train-classifier",
                                   help="train the dataset classifier whose features eval-samples compares")
    parser.add_argument("--data", required=True, help="dataset name, e.g. mnist (see `latentar data fetch`)")
    add_data_options(parser)
    add_settings(parser, ClassifierConfig, asdict(ClassifierConfig()), only=ARCH_FLAGS)
    add_run_folder_options(parser, TrainConfig(steps=2000, batch_size=128))
    parser.set_defaults(func=run_train_classifier)


def run_train_classifier(args) -> None:
    record = train_classifier(data_config(args), args.out, train_config(args), subset=args.subset,
                              rerun=rerun(args), eval_batch_size=args.eval_batch_size,
                              **settings(args, ClassifierConfig, only=ARCH_FLAGS))
    if PartialState().is_main_process:
        print(json.dumps(record["test"], indent=2))

"""The command line: train-prior → summary.json → eval, data fetch, and clear errors (exit 2)."""

from __future__ import annotations

import argparse
import json
import runpy
import sys
from dataclasses import asdict, dataclass, field

import pytest
import torch
from cli_run import run

import latentar
from latentar import cli
from latentar.commands import data as data_command
from latentar.commands.options import add_settings, parse_assignments, settings
from latentar.config import field_comments
from latentar.training import TrainConfig


def test_unknown_prior_exits_2_naming_the_known_priors(capsys, tmp_path):
    code, _, err = run(capsys, "train-prior", "--data", "mnist", "--prior", "nope", "--out", tmp_path)
    assert code == 2
    assert err.startswith("latentar: error: unknown prior 'nope'") and "pixelcnn" in err


def test_python_dash_m_reports_errors_without_a_traceback(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["latentar", "train-prior", "--data", "mnist", "--prior", "nope",
                                      "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exit:
        runpy.run_module("latentar", run_name="__main__")  # what `python -m latentar` runs
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "known priors" in err and "Traceback" not in err


def test_parse_assignments_reads_literals_and_strings():
    assert parse_assignments(["hidden=32", "dropout=0.5", "gated=true", "kind=rows", "size=none"]) == {
        "hidden": 32, "dropout": 0.5, "gated": True, "kind": "rows", "size": None}
    with pytest.raises(ValueError, match="--arch expects KEY=VALUE"):
        parse_assignments(["hidden"])


def test_every_trainconfig_field_is_a_flag_with_its_default_choices_and_comment():
    parser = cli.build_parser()
    train_prior = parser._subparsers._group_actions[0].choices["train-prior"]
    actions = {action.dest: action for action in train_prior._actions}
    comments = field_comments(TrainConfig)
    for name, default in asdict(TrainConfig()).items():
        action = actions[name]
        flag = "--" + name.replace("_", "-")  # a switch that is on by default has its --no-... too
        assert action.option_strings == [flag] + ([f"--no-{flag[2:]}"] if default is True else [])
        assert action.default == default
        assert action.help.startswith(comments[name].replace("%", "%%")), name
    assert actions["lr_schedule"].choices == TrainConfig.bounds["lr_schedule"]
    assert actions["prior"].required and actions["preset"].default is None  # PriorConfig's flags, --prior NAME


def test_a_new_field_is_a_new_flag():
    @dataclass
    class Settings:
        bounds = {"mode": ("fast", "exact")}

        width: int = 4  # channels of the thing
        rate: float | None = None  # how often; None = never
        mode: str = "exact"  # how it runs
        loud: bool = False  # say more
        extra: dict = field(default_factory=dict)  # anything else

    parser = argparse.ArgumentParser()
    add_settings(parser, Settings, asdict(Settings()), flags={"width": "size"})
    args = parser.parse_args(["--size", "8", "--rate", "0.5", "--loud", "--extra", "a=1", "b=x"])
    assert settings(args, Settings, flags={"width": "size"}) == {
        "width": 8, "rate": 0.5, "mode": "exact", "loud": True, "extra": {"a": 1, "b": "x"}}
    assert "how often; None = never" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "slow"])


def test_train_prior_then_eval_round_trip(capsys, tmp_path, image_folder):
    out = tmp_path / "run"
    common = ["--data", "image_folder", "--data-root", image_folder]
    code, printed, err = run(capsys, "train-prior", *common, "--prior", "pixelcnn", "--preset", "tiny",
                             "--class-conditional", "--arch", "hidden=4", "--steps", 2, "--batch-size", 4,
                             "--subset", 8, "--ema-decay", 0.5, "--lr-schedule", "cosine", "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["train_items"] == 8 and summary["class_conditional"]
    assert json.loads(printed) == summary["test"] and summary["test"]["count"] == 8
    prior = latentar.load(out / "model")
    assert prior.spec.num_classes == 2 and prior.arch.hidden == 4

    code, printed, err = run(capsys, "eval", "--model", out / "model", *common, "--batch-size", 3)
    assert code == 0, err
    assert json.loads(printed)["bits_per_dim"] == pytest.approx(summary["test"]["bits_per_dim"], rel=1e-6)

    code, _, err = run(capsys, "train-prior", *common, "--prior", "pixelcnn", "--preset", "tiny", "--out", out)
    assert code == 2 and "--resume" in err


@pytest.mark.parametrize("argv, message", [
    (["--arch", "widht=3"], "unknown argument(s) ['widht']"),
    (["--subset", "0"], "subset must be in [1, 32]"),
    (["--lr", "-1"], "TrainConfig.lr must be a positive number"),
    (["--preset", "huge"], "unknown preset 'huge'"),
])
def test_train_prior_rejects_bad_arguments(capsys, tmp_path, image_folder, argv, message):
    code, _, err = run(capsys, "train-prior", "--data", "image_folder", "--data-root", image_folder,
                       "--prior", "pixelcnn", "--out", tmp_path / "run", *argv)
    assert code == 2 and message in err


def test_eval_rejects_a_folder_without_a_model(capsys, tmp_path):
    code, _, err = run(capsys, "eval", "--model", tmp_path, "--data", "mnist")
    assert code == 2 and "config.json is missing" in err


def test_data_fetch_prints_the_report(capsys, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(data_command.data, "fetch", lambda name, root: calls.append((name, root)) or {"name": name})
    monkeypatch.setattr(data_command.data, "describe_fetch", lambda report: f"fetched {report['name']}")
    code, printed, _ = run(capsys, "data", "fetch", "mnist", "--data-root", tmp_path)
    assert code == 0 and printed.strip() == "fetched mnist" and calls == [("mnist", str(tmp_path))]


def test_data_fetch_of_a_dataset_with_nothing_to_fetch_exits_2(capsys):
    code, _, err = run(capsys, "data", "fetch", "image_folder")
    assert code == 2 and "has nothing to fetch" in err


def test_version_names_latentar_and_torch(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"latentar {latentar.__version__} (torch {torch.__version__})"


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train-prior", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 1000)", "(default: 32)", "(default: 0.001)"):  # steps, batch size, lr
        assert default in text

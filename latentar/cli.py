"""The ``latentar`` command line: ``latentar <command> [options]``.

The commands live in ``latentar.commands`` (one module per command group); each is
registered by an ``add_<name>_command(subparsers)`` function that sets ``func=`` to the
function running it. ``main`` builds the parser from ``COMMANDS``, dispatches, and turns
errors a user causes into ``latentar: error: <message>`` with exit status 2.

Which errors a user causes:

- ``USER_ERRORS``: a bad value (ValueError, TypeError), an unknown name (LookupError), a
  missing file (FileNotFoundError), a missing optional extra (MissingExtraError, which says what
  to pip install), a folder that holds no model (NotAModelError) or an
  output that could not be written (WriteError: "cannot write PATH: reason", a full disk
  most often; the previous file is kept). The code raises these for bad input only, with
  a message naming what was expected and got.
- an ``OSError`` whose errno is in ``USER_ERRNOS``: a path the user named cannot be
  used (no permission, read-only, a file where a folder belongs or the reverse, disk
  full). The message is the system's reason and the path.

Everything else (any other OSError, RuntimeError, ...) is a bug or a broken machine and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import sys

import torch

from latentar.commands import (
    bench,
    data,
    encode,
    eval_samples,
    evaluate,
    fit_palette,
    push,
    receptive_field,
    report,
    run,
    sample,
    sweep,
    train_classifier,
    train_prior,
    train_vqvae,
)
from latentar.files import WriteError
from latentar.memory import max_memory
from latentar.progress import set_quiet
from latentar.quality import MissingExtraError
from latentar.saving import NotAModelError
from latentar.version import __version__

USER_ERRORS = (ValueError, LookupError, FileNotFoundError, NotAModelError, TypeError, WriteError, MissingExtraError)
USER_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.EEXIST, errno.ENOTDIR, errno.EISDIR,
                         errno.ENOENT, errno.ENAMETOOLONG, errno.ENOSPC, errno.EDQUOT})
USAGE_ERROR = 2

COMMANDS = [data.add_data_command, train_prior.add_train_prior_command, evaluate.add_eval_command,
            bench.add_bench_command, receptive_field.add_receptive_field_command, run.add_run_command,
            sample.add_sample_command, sample.add_complete_command, train_vqvae.add_train_vqvae_command,
            encode.add_encode_command, report.add_report_command, push.add_push_command,
            train_classifier.add_train_classifier_command, eval_samples.add_eval_samples_command,
            sweep.add_sweep_command, fit_palette.add_fit_palette_command]
QUIET_HELP = "no progress bars (they show only on a terminal anyway)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentar", description="VQ-VAE + autoregressive priors.")
    parser.add_argument("--quiet", "-q", action="store_true", help=QUIET_HELP)
    parser.add_argument("--version", action="version", version=f"latentar {__version__} (torch {torch.__version__})")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(subparsers)
    for command in subparsers.choices.values():  # `latentar COMMAND --quiet` too
        command.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS, help=QUIET_HELP)
    show_defaults(parser)
    return parser


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help that shows every default and keeps a description's own line breaks."""


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and every sub-command under it the ``HelpFormatter``."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                show_defaults(command)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    try:
        with max_memory(getattr(args, "max_memory", None)):  # the --max-memory of commands that take it
            args.func(args)
    except (*USER_ERRORS, OSError) as e:
        if isinstance(e, OSError) and not isinstance(e, USER_ERRORS) and e.errno not in USER_ERRNOS:
            raise
        print(f"{parser.prog}: error: {_message(e)}", file=sys.stderr)
        return USAGE_ERROR
    return 0


def _message(error: BaseException) -> str:
    if isinstance(error, KeyError) and error.args:  # KeyError wraps its message in quotes
        return str(error.args[0])
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        paths = " -> ".join(str(f) for f in (error.filename, error.filename2) if f is not None)
        return f"{error.strerror}: {paths}"  # e.g. "Permission denied: runs/x/.lock"
    return str(error)


if __name__ == "__main__":
    sys.exit(main())

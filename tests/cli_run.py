"""Running the command line inside a test: ``run(capsys, *argv)``."""

from __future__ import annotations

from latentar import cli


def run(capsys, *argv) -> tuple[int, str, str]:
    """``cli.main`` on argv (each item str()-ed) -> (exit status, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err

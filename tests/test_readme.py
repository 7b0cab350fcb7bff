"""The README's Python snippets run, so the README cannot rot: every ```python block of
README.md is executed on its own, in a fresh namespace, from an empty temporary folder.

A block whose first line is ``# not run in tests: REASON`` (it fetches a dataset, or trains
for minutes) is skipped with that reason; every other block must run as written, so snippets
give themselves tiny settings where the README allows it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
NOT_RUN = "# not run in tests:"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the opening fence, code) of each ```python block of a markdown text."""
    blocks, start, code = [], None, []
    for number, line in enumerate(text.splitlines(), 1):
        if start is None and line.strip() == "```python":
            start, code = number, []
        elif start is not None and line.strip() == "```":
            blocks.append((start, "\n".join(code) + "\n"))
            start = None
        elif start is not None:
            code.append(line)
    assert start is None, f"README.md:{start}: a ```python block is never closed"
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_most_snippets_run_and_the_others_say_why_not():
    skipped = [(line, code.splitlines()[0]) for line, code in BLOCKS if code.startswith(NOT_RUN)]
    assert len(BLOCKS) >= 5 and len(skipped) < len(BLOCKS) / 2, skipped
    for line, first in skipped:
        assert first[len(NOT_RUN):].strip(), f"README.md:{line}: say why the snippet is not run"


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_snippet_runs(line, code, tmp_path, monkeypatch):
    if code.startswith(NOT_RUN):
        pytest.skip(f"README.md:{line}:{code.splitlines()[0][len(NOT_RUN):]}")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": f"readme_{line}"})

"""The package's layers point one way: the order in ``latentar/__init__.py``'s docstring,
read from the source with ``ast`` (imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import latentar

PACKAGE = Path(latentar.__file__).parent


def layer_order() -> list[list[str]]:
    """The layers, lowest first, as written in the package docstring's ``Layers:`` block."""
    doc = latentar.__doc__ or ""
    block = doc.split("Layers (lowest first):", 1)[1].strip().split("\n\n")[0]
    return [[name.strip() for name in line.split(",")] for line in block.splitlines() if line.strip()]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every ``latentar...`` module that the file imports, anywhere in it."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from ..a import b
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            if base == "latentar":  # from latentar import data (a module) / load (the public API)
                found.update(f"latentar.{a.name}" if (PACKAGE / a.name).exists() or
                             (PACKAGE / f"{a.name}.py").exists() else "latentar" for a in node.names)
            else:
                found.add(base)
    return {name for name in found if name == "latentar" or name.startswith("latentar.")}


def unit_of(module: str, units: set[str]) -> str | None:
    """The layer unit a module belongs to: 'latentar.priors.base' -> 'priors'."""
    parts = module.split(".")[1:]
    return parts[0] if parts and parts[0] in units else None


def import_graph() -> dict[str, set[str]]:
    """unit -> units it imports (the package root excepted: it is the public API on top)."""
    units = {name for layer in layer_order() for name in layer}
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = unit_of(module_name(path), units)
        if module_name(path) == "latentar":
            continue
        assert source is not None, f"{path.relative_to(PACKAGE)} is in no layer of latentar/__init__.py's order"
        for target in imports_of(path):
            if target == "latentar":
                raise AssertionError(f"{path.relative_to(PACKAGE)} imports the package root; import the module")
            unit = unit_of(target, units)
            if unit is not None and unit != source:
                graph.setdefault(source, set()).add(unit)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    visiting, done = [], set()

    def visit(node):
        if node in visiting:
            return visiting[visiting.index(node):] + [node]
        if node in done:
            return None
        visiting.append(node)
        for nxt in sorted(graph.get(node, ())):
            cycle = visit(nxt)
            if cycle:
                return cycle
        visiting.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return None


def test_every_import_points_down_the_layer_order():
    rank = {name: i for i, layer in enumerate(layer_order()) for name in layer}
    upward = sorted(f"{a} -> {b}" for a, targets in import_graph().items() for b in targets if rank[b] > rank[a])
    assert not upward, f"imports that point up the layer order: {upward}"


def test_no_import_cycle_between_units():
    assert find_cycle(import_graph()) is None, f"import cycle: {' -> '.join(find_cycle(import_graph()))}"


def test_the_checker_sees_an_upward_import_inside_a_function(tmp_path, monkeypatch):
    bad = tmp_path / "latentar" / "nn"
    bad.mkdir(parents=True)
    (bad / "x.py").write_text("def f():\n    from latentar.runs import run_recipe\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path / "latentar")
    assert imports_of(bad / "x.py") == {"latentar.runs"}
    with pytest.raises(AssertionError, match="nn -> runs"):
        test_every_import_points_down_the_layer_order()

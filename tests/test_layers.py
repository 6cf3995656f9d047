"""The package's shape: no import runs up the layer order, no import loops, every module imports on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "distmtl"
#: config → data → tasks → models → weighting → engine → launch/evaluation → tune/recipes → cli; a module may
#: import its own layer and those below. Leaves (tracking, sharing) import only the foundation.
LAYERS = {"": 0, "errors": 0, "registry": 0, "logs": 0, "features": 0, "machine": 0,
          "config": 1, "data": 2, "tasks": 3, "models": 4, "weighting": 5, "engine": 6,
          "launch": 7, "evaluation": 7, "tune": 8, "recipes": 8, "cli": 9, "__main__": 9}
LEAVES = {"tracking", "sharing"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(path: Path) -> set[str]:
    """distmtl modules ``path`` imports anywhere (functions included), except under ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for n in ast.walk(node)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.update([node.module] + [f"{node.module}.{a.name}" for a in node.names])
    return {n for n in names if n.split(".")[0] == "distmtl"}


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


MODULES = _modules()
GRAPH = {m: {i for i in _imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_runs_up_the_layer_order(module: str) -> None:
    area = _area(module)
    for target in GRAPH[module]:
        other = _area(target)
        if other == area:
            continue
        if area in LEAVES:
            assert LAYERS.get(other, 99) == 0, f"{module} (a leaf) imports {target}"
        elif other not in LEAVES:
            assert LAYERS[other] <= LAYERS[area], f"{module} ({area}) imports {target} ({other}), a higher layer"


def test_no_import_loops() -> None:
    try:
        TopologicalSorter(GRAPH).prepare()
    except CycleError as exc:
        pytest.fail(f"import loop: {' -> '.join(exc.args[1])}")


@pytest.mark.subprocess
def test_every_module_imports_in_a_fresh_interpreter() -> None:
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n" \
             "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'distmtl']:\n" \
             "        del sys.modules[loaded]\n" \
             "    importlib.import_module(name)\n"
    importable = sorted(m for m in MODULES if not m.endswith("__main__"))  # __main__ runs the CLI
    done = subprocess.run([sys.executable, "-c", script, *importable], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

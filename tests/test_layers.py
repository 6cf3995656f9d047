"""The package's shape: the import contracts of pyproject.toml hold (layers, leaves, no loops; import-linter),
every module imports on its own, and ruff (configured in pyproject.toml) finds nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "distmtl"


def test_the_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache", "--no-logo"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 kept, 0 broken" in done.stdout


def test_ruff_finds_nothing() -> None:
    ruff = Path(sys.executable).with_name("ruff")
    done = subprocess.run([str(ruff), "check", "--no-cache", "distmtl", "tests", "scripts"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


@pytest.mark.subprocess
def test_every_module_imports_in_a_fresh_interpreter() -> None:
    modules = sorted(".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
                     for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")  # __main__ runs the CLI
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n" \
             "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'distmtl']:\n" \
             "        del sys.modules[loaded]\n" \
             "    importlib.import_module(name)\n"
    done = subprocess.run([sys.executable, "-c", script, *modules], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

"""Layering rules: the pure core does no I/O; public surfaces are explicit."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import postroom

SRC = Path(postroom.__file__).parent
PURE_CORE = [
    "mail",
    "smtp/connection.py",
    "smtp/events.py",
    "smtp/replies.py",
    "smtp/grammar.py",
    "smtp/params.py",
    "smtp/state.py",
    "smtp/receiver.py",
    "smtp/sasl.py",
    "smtp/client.py",
    "config",
    "clock.py",
    "ids.py",
    "errors.py",
]
IO_MODULES = {"asyncio", "socket", "ssl", "selectors"}


def _files(entry: str) -> list[Path]:
    path = SRC / entry
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", [p for e in PURE_CORE for p in _files(e)], ids=str)
def test_pure_core_does_no_io(path: Path) -> None:
    assert not (_imports(path) & IO_MODULES), f"{path} imports an I/O module"


def _modules() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.walk_packages([str(SRC)], prefix="postroom.")
        if not info.name.endswith("__main__")
    )


@pytest.mark.parametrize("name", _modules())
def test_public_surface_exists(name: str) -> None:
    """Every name in ``__all__`` exists (ruff's RUF022 keeps the lists sorted)."""
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        return
    for item in exported:
        assert hasattr(module, item), f"{name}.__all__ names {item}, which is missing"


def test_import_contracts() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint)], capture_output=True, text=True, check=False, cwd=SRC.parent.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr

"""Layering rules: the pure core does no I/O; public surfaces are explicit."""

from __future__ import annotations

import ast
import importlib
import os
import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import postroom

SRC = Path(postroom.__file__).parent
PYPROJECT = SRC.parent.parent / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
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
    "smtp/clientconnection.py",
    "smtp/trouble.py",
    "pop3/connection.py",
    "pop3/events.py",
    "pop3/body.py",
    "imap/connection.py",
    "imap/commands.py",
    "imap/responses.py",
    "imap/receiver.py",
    "imap/tokens.py",
    "imap/structure.py",
    "imap/sections.py",
    "imap/search.py",
    "imap/view.py",
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


def _lint_imports(src: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with our contracts over the package found in ``src``."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(PYPROJECT)],
        capture_output=True,
        text=True,
        check=False,
        cwd=src,  # lint-imports puts its working directory first on sys.path
        env={**os.environ, "COLUMNS": "300"},
    )


def test_import_contracts() -> None:
    result = _lint_imports(SRC.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def _contract(contract_id: str) -> dict[str, object]:
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if c.get("id") == contract_id)


def _layer_modules() -> set[str]:
    layers = _contract("layers")["layers"]
    assert isinstance(layers, list)
    return {
        "postroom." + name.strip()
        for layer in layers
        for name in layer.replace(":", "|").split("|")
    }


def test_every_top_level_module_is_a_layer() -> None:
    """lint-imports' `exhaustive` covers the top level; `smtp`, `pop3` and `imap` are
    listed module by module."""
    declared = _layer_modules()
    split = ("smtp", "pop3", "imap")
    for info in pkgutil.iter_modules([str(SRC)], prefix="postroom."):
        if info.name.removeprefix("postroom.") in split:
            continue
        assert info.name in declared, f"{info.name} is in no layer"
    for package in split:
        for info in pkgutil.iter_modules([str(SRC / package)], prefix=f"postroom.{package}."):
            assert info.name in declared, f"{info.name} is in no layer"


def test_every_mailer_module_is_in_the_independence_contract() -> None:
    """A wildcard, not a list: a new provider module is covered the day it is added."""
    assert _contract("mailers")["modules"] == ["postroom.delivery.mailers.*.*"]
    assert _contract("webhooks")["modules"] == ["postroom.delivery.webhooks.*"]


def test_contracts_report_a_door_policy_or_provider_crossing(tmp_path: Path) -> None:
    """The contracts bite: a copy of the package with four violations fails on each."""
    copy = tmp_path / "postroom"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "intake" / "policy.py").open("a") as policy:
        policy.write("\nimport postroom.delivery.scheduler\n")
    with (copy / "delivery" / "mailers" / "api" / "zoho.py").open("a") as zoho:
        zoho.write("\nfrom postroom.delivery.mailers.api import sendgrid\n")
    with (copy / "delivery" / "mailers" / "mta" / "relay.py").open("a") as relay:
        relay.write("\nfrom postroom.delivery.mailers.mta import mx\n")
    (copy / "stray.py").write_text('"""A module in no layer."""\n')

    result = _lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "postroom.intake is not allowed to import postroom.delivery" in out
    assert "postroom.intake.policy -> postroom.delivery.scheduler" in out
    mailers = "postroom.delivery.mailers"
    assert f"{mailers}.api.zoho is not allowed to import {mailers}.api.sendgrid" in out
    assert f"{mailers}.mta.relay is not allowed to import {mailers}.mta.mx" in out
    assert "- postroom.stray" in out

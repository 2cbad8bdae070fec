"""docs/configuration.md and postroom.example.toml name every setting; the example loads."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from postroom.config import load
from postroom.config.settings import Settings

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs" / "configuration.md"
EXAMPLE = ROOT / "postroom.example.toml"
# A "#" directly followed by a key or a table header is a setting; "# " starts prose.
_SETTING_LINE = re.compile(r"^#(?=[A-Za-z_\[])", re.MULTILINE)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = get_args(annotation)  # tuple[ListenerSettings, ...]
    if args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0]
    return None


def field_paths(model: type[BaseModel] = Settings, prefix: str = "") -> Iterator[str]:
    """Every leaf setting as a dotted path: ``limits.auth.window``, ``listeners.port``."""
    for name, field in model.model_fields.items():
        inner = _model_of(field.annotation)
        if inner is None:
            yield prefix + name
        else:
            yield from field_paths(inner, f"{prefix}{name}.")


PATHS = list(field_paths())


def uncommented_example() -> str:
    return _SETTING_LINE.sub("", EXAMPLE.read_text())


def _present(data: Any, parts: list[str]) -> bool:
    if not parts:
        return True
    if isinstance(data, list):
        return bool(data) and all(_present(item, parts) for item in data)
    return isinstance(data, dict) and parts[0] in data and _present(data[parts[0]], parts[1:])


def test_the_walk_finds_nested_and_listener_keys() -> None:
    assert {"hostname", "limits.auth.window", "listeners.role", "tls.min_version"} <= set(PATHS)


@pytest.mark.parametrize("path", PATHS)
def test_every_setting_is_documented(path: str) -> None:
    assert f"`{path}`" in DOCS.read_text(), f"docs/configuration.md does not describe {path}"


@pytest.mark.parametrize("path", PATHS)
def test_every_setting_is_in_the_example(path: str) -> None:
    data = tomllib.loads(uncommented_example())
    assert _present(data, path.split(".")), f"postroom.example.toml lacks {path}"


def test_the_example_as_shipped_loads_as_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load(EXAMPLE) == load(None)


def test_the_example_uncommented_gives_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "uncommented.toml"
    path.write_text(uncommented_example())
    example = load(path).model_dump()
    defaults = load(None).model_dump()
    for dotted in PATHS:
        if dotted.startswith("listeners."):
            continue
        *parents, leaf = dotted.split(".")
        given, default = example, defaults
        for part in parents:
            given, default = given[part], default[part]
        if default[leaf] is None or dotted == "hostname":
            assert given[leaf] is not None  # unset by default: the example shows a value
            continue
        assert given[leaf] == default[leaf], dotted
    assert example["listeners"] == defaults["listeners"]

"""docs/configuration.md and postroom.example.toml name every setting; the example loads."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from postroom.config import load
from postroom.config.settings import Settings

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs" / "configuration.md"
EXAMPLE = ROOT / "postroom.example.toml"
# A "#" directly followed by a key or a table header is a setting; "# " starts prose.
_SETTING_LINE = re.compile(r"^#(?=[A-Za-z_\[])", re.MULTILINE)


def _models_of(annotation: Any) -> list[type[BaseModel]]:
    """The settings models behind an annotation: a model, ``tuple[Model, ...]``, or a
    (discriminated) union of models such as ``tuple[MailerSettings, ...]``."""
    if get_origin(annotation) is Annotated:
        return _models_of(get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    args = get_args(annotation)
    if get_origin(annotation) in (Union, UnionType):
        return [model for arg in args for model in _models_of(arg)]
    return _models_of(args[0]) if args else []


def field_paths(
    model: type[BaseModel] = Settings, prefix: str = "", outer: tuple[type[BaseModel], ...] = ()
) -> Iterator[str]:
    """Every leaf setting as a dotted path: ``limits.auth.window``, ``listeners.port``,
    ``mailers.host`` (any mailer type), ``routes.conditions.value``. A recursive field
    (``routes.all_of`` holds groups like the route) is a leaf."""
    outer = (*outer, model)
    for name, field in model.model_fields.items():
        inner = [
            m for m in _models_of(field.annotation) if not any(issubclass(o, m) for o in outer)
        ]
        if not inner:
            yield prefix + name
            continue
        for member in inner:
            yield from field_paths(member, f"{prefix}{name}.", outer)


PATHS = list(dict.fromkeys(field_paths()))
# Arrays of tables whose example entries are examples, not the defaults.
_EXAMPLES = ("listeners.", "mailers.", "routes.")


def uncommented_example() -> str:
    return _SETTING_LINE.sub("", EXAMPLE.read_text())


def _present(data: Any, parts: list[str]) -> bool:
    if not parts:
        return True
    if isinstance(data, list):  # in some entry: each mailer type has keys of its own
        return any(_present(item, parts) for item in data)
    return isinstance(data, dict) and parts[0] in data and _present(data[parts[0]], parts[1:])


def test_the_walk_finds_nested_listener_mailer_and_route_keys() -> None:
    assert {
        "hostname",
        "limits.auth.window",
        "listeners.role",
        "tls.min_version",
        "mailers.type",
        "mailers.host",
        "mailers.require_tls",
        "routes.mailers",
        "routes.conditions.header",
        "routes.any_of",
    } <= set(PATHS)


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
        if dotted.startswith(_EXAMPLES):
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
    built_in = {m["name"]: m for m in example["mailers"]}
    for mailer in defaults["mailers"]:
        assert built_in[mailer["name"]] == mailer  # the built-ins, shown at their defaults
    assert example["routes"]  # the route examples load together

"""docs/configuration.md and postroom.example.toml name every setting; the example loads;
the README's quick start works, block by block, against a running server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from postroom.config import load
from postroom.config.settings import Settings
from tests.support.servers import cli_out, start_process, write_config

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
_EXAMPLES = ("listeners.", "mailers.", "routes.", "webhooks.", "alerts.")


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


# -- the README's quick start, run as a reader would -------------------------------------

README = ROOT / "README.md"
# A fenced shell or Python block, and the marker before one the test must not run.
_BLOCK = re.compile(
    r"^(?:<!-- docs-test: skip \((?P<skip>[^)]+)\) -->\n)?"
    r"```(?P<lang>sh|python)\n(?P<code>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
PASSWORD = "your password"  # what the quick start's smtplib block logs in with


@dataclass
class Block:
    lang: str
    code: str
    skip: str | None  # why the test does not run it


def quick_start_blocks() -> list[Block]:
    text = README.read_text()
    start = text.index("## Quick start")
    section = text[start : text.index("\n## ", start)]
    return [Block(m["lang"], m["code"], m["skip"]) for m in _BLOCK.finditer(section)]


def test_the_quick_start_has_shell_and_python_blocks_and_says_why_one_is_not_run() -> None:
    blocks = quick_start_blocks()
    assert len([b for b in blocks if b.lang == "sh" and not b.skip]) >= 4
    assert len([b for b in blocks if b.lang == "python" and not b.skip]) >= 3
    assert [b.skip for b in blocks if b.skip] == ["it changes the system's sendmail"]


def test_every_quick_start_block_works_against_a_running_server(tmp_path: Path) -> None:
    """In order, in one directory, as the reader's second terminal: the server's ports
    (free ones) put where the README has 2587, 2110 and 8025, the API key from `postroom
    apikey create myapp` where it has `pr_...` and `$POSTROOM_API_KEY`, and the id the
    API answered where it has `01J…` and `<ID>`. Prompts read the password from standard
    input (without a controlling terminal, as the blocks run in a session of their own)."""
    data = tmp_path / "postroom-data"
    roles = ("mx", "submission", "submissions", "pop3")
    config = write_config(tmp_path / "postroom.toml", data, ports=dict.fromkeys(roles, 0))
    activate = tmp_path / ".venv" / "bin" / "activate"
    activate.parent.mkdir(parents=True)
    activate.write_text(f'export PATH="{Path(sys.executable).parent}:$PATH"\n')
    env = {
        **os.environ,
        "POSTROOM_CONFIG": str(config),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    server = start_process(config, tmp_path / "postroom.log")
    try:
        assert server.api_port is not None
        values = {
            "2587": str(server.ports["submission"]),
            "2110": str(server.ports["pop3"]),
            "8025": str(server.api_port),
        }
        for block in quick_start_blocks():
            if block.skip:
                continue
            code = block.code
            for placeholder, value in values.items():
                code = code.replace(placeholder, value)
            command = ["bash", "-e", "-c", code] if block.lang == "sh" else [sys.executable]
            done = subprocess.run(
                command,
                input=code if block.lang == "python" else f"{PASSWORD}\n{PASSWORD}\n",
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                start_new_session=True,
            )
            assert done.returncode == 0, f"{block.code}\n{done.stdout}\n{done.stderr}"
            if "postroom user add" in block.code:  # the users exist: make the key
                key = cli_out(config, "apikey", "create", "myapp").splitlines()[-1]
                env["POSTROOM_API_KEY"] = values["pr_..."] = key
            if answer := _sent(done.stdout):
                values["01J…"] = values["<ID>"] = answer
            if block.lang == "python" and "client.get(" in block.code:
                assert done.stdout.strip() in {"queued", "deferred", "delivered"}
            if "poplib" in block.code:  # the quick start ends reading the message it sent
                assert "Subject: first" in done.stdout and "It arrived." in done.stdout
        assert "01J…" in values  # the API's answer was seen and its id used
    finally:
        server.kill()


def _sent(output: str) -> str | None:
    """The id in the API's answer to a send, if ``output`` is one."""
    for line in output.splitlines():
        if line.startswith("{"):
            answer = json.loads(line)
            if answer.get("status") == "queued":
                return str(answer["id"])
    return None

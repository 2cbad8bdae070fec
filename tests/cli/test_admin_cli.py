"""``postroom admin``: the dashboard's administrators, apart from mail users; as a real
process."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.cli.test_cli import ok, one_line_error, postroom
from tests.support.servers import make_store


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "postroom.toml"
    path.write_text(f'hostname = "mail.test"\ndata_dir = "{tmp_path / "data"}"\n')
    return make_store(path)


def test_add_list_and_remove_an_admin_with_an_argon2_password(config: Path, tmp_path: Path) -> None:
    assert "No admins: the dashboard is off." in ok(postroom(config, "admin", "list"))
    ok(postroom(config, "admin", "add", "ada", "--password-stdin", stdin="long secret\n"))
    with sqlite3.connect(tmp_path / "data" / "postroom.db") as db:
        ((name, password_hash),) = db.execute("SELECT name, password_hash FROM admins")
        users = db.execute("SELECT count(*) FROM users").fetchone()[0]
    assert name == "ada" and password_hash.startswith("$argon2id$")
    assert users == 0  # an admin is no mail user
    listed = json.loads(ok(postroom(config, "admin", "list", "--json")))
    assert [a["name"] for a in listed] == ["ada"]
    ok(postroom(config, "admin", "remove", "ada"))
    assert json.loads(ok(postroom(config, "admin", "list", "--json"))) == []


def test_bad_names_duplicates_and_unknown_admins_get_one_line(config: Path) -> None:
    assert "not a valid admin name" in one_line_error(
        postroom(config, "admin", "add", "a b", "--password-stdin", stdin="pw\n")
    )
    ok(postroom(config, "admin", "add", "ada", "--password-stdin", stdin="pw\n"))
    assert "already exists" in one_line_error(
        postroom(config, "admin", "add", "ada", "--password-stdin", stdin="pw\n")
    )
    assert "no such admin" in one_line_error(postroom(config, "admin", "remove", "bob"))

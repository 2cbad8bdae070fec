"""``postroom apikey``: create (shown once), list, revoke; as a real process."""

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


def test_create_shows_the_key_once_and_stores_only_a_hash(config: Path, tmp_path: Path) -> None:
    out = ok(postroom(config, "apikey", "create", "shop", "--sender-domain", "Bücher.example"))
    token = out.splitlines()[-1]
    assert token.startswith("pr_")
    with sqlite3.connect(tmp_path / "data" / "postroom.db") as db:
        rows = db.execute("SELECT name, secret_hash, sender_domains FROM api_keys").fetchall()
    assert rows[0][0] == "shop"
    assert rows[0][2] == "xn--bcher-kva.example"
    secret = token.split("_", 2)[2]
    assert secret not in rows[0][1]
    listed = json.loads(ok(postroom(config, "apikey", "list", "--json")))
    assert listed == [
        {
            "name": "shop",
            "sender_domains": ["xn--bcher-kva.example"],
            "scopes": ["send", "read"],
            "any_sender": False,
            "may_send_as": "local domains, xn--bcher-kva.example",
            "created_at": listed[0]["created_at"],
        }
    ]
    assert token not in ok(postroom(config, "apikey", "list"))


def test_keys_send_as_the_local_domains_unless_any_sender_and_the_list_says_so(
    config: Path,
) -> None:
    assert "may send as local domains." in ok(postroom(config, "apikey", "create", "app"))
    assert "may send as any domain." in ok(
        postroom(config, "apikey", "create", "relay", "--any-sender")
    )
    table = ok(postroom(config, "apikey", "list"))
    assert "local domains" in table and "any domain" in table
    listed = {
        k["name"]: k["may_send_as"]
        for k in json.loads(ok(postroom(config, "apikey", "list", "--json")))
    }
    assert listed == {"app": "local domains", "relay": "any domain"}
    both = postroom(config, "apikey", "create", "x", "--any-sender", "--sender-domain", "a.test")
    assert both.returncode == 2 and "--any-sender" in both.stderr


def test_apikey_senders_replaces_what_a_key_may_send_as(config: Path) -> None:
    ok(postroom(config, "apikey", "create", "app", "--any-sender"))
    changed = postroom(config, "apikey", "senders", "app", "--sender-domain", "shop.example")
    assert ok(changed) == "API key app may send as local domains, shop.example\n"
    [listed] = json.loads(ok(postroom(config, "apikey", "list", "--json")))
    assert (listed["any_sender"], listed["sender_domains"]) == (False, ["shop.example"])
    assert "no API key" in one_line_error(postroom(config, "apikey", "senders", "nope"))


def test_names_are_unique_and_revoke_removes(config: Path) -> None:
    ok(postroom(config, "apikey", "create", "app"))
    assert "already exists" in one_line_error(postroom(config, "apikey", "create", "app"))
    assert "revoked" in ok(postroom(config, "apikey", "revoke", "app"))
    assert "no API key" in one_line_error(postroom(config, "apikey", "revoke", "app"))
    assert ok(postroom(config, "apikey", "list")).strip() == "No API keys."


def test_bad_names_and_domains_are_one_line_errors(config: Path) -> None:
    one_line_error(postroom(config, "apikey", "create", "has space"))
    one_line_error(postroom(config, "apikey", "create", "ok", "--sender-domain", "not a domain"))


def test_scopes_are_given_repeated_or_as_a_list_and_shown(config: Path) -> None:
    ok(postroom(config, "apikey", "create", "ops", "--scope", "queue,read-all", "--scope", "read"))
    ok(postroom(config, "apikey", "create", "shop"))
    listed = {
        k["name"]: k["scopes"] for k in json.loads(ok(postroom(config, "apikey", "list", "--json")))
    }
    assert listed == {"ops": ["read", "read-all", "queue"], "shop": ["send", "read"]}
    table = ok(postroom(config, "apikey", "list"))
    assert "Scopes" in table
    assert "read,read-all,queue" in table


def test_an_unknown_scope_is_a_one_line_error(config: Path) -> None:
    assert "unknown scope 'admin'" in one_line_error(
        postroom(config, "apikey", "create", "x", "--scope", "send,admin")
    )
    assert "at least one scope" in one_line_error(
        postroom(config, "apikey", "create", "x", "--scope", ",")
    )
    assert ok(postroom(config, "apikey", "list")).strip() == "No API keys."

"""``postroom suppression`` and ``postroom webhook``, as real processes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from postroom.events.signing import verify
from tests.cli.test_cli import ok, one_line_error, postroom
from tests.support.http_fake import Reply, Request, serve
from tests.support.servers import make_store


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "postroom.toml"
    path.write_text(f'hostname = "mail.test"\ndata_dir = "{tmp_path / "data"}"\n')
    return make_store(path)


def test_suppression_add_list_remove(config: Path) -> None:
    assert ok(postroom(config, "suppression", "add", "Bob@Example.NET")) == (
        "bob@example.net suppressed globally\n"
    )
    added = postroom(config, "suppression", "add", "carol@example.net", "--scope", "Bücher.example",
                     "--reason", "unsubscribe", "--note", "asked by phone")  # fmt: skip
    assert ok(added) == "carol@example.net suppressed for xn--bcher-kva.example\n"
    listed = json.loads(ok(postroom(config, "suppression", "list", "--json")))
    assert [(e["address"], e["scope"], e["reason"], e["detail"]) for e in listed] == [
        ("bob@example.net", "", "manual", ""),
        ("carol@example.net", "xn--bcher-kva.example", "unsubscribe", "asked by phone"),
    ]
    assert listed[0]["source"].startswith("cli ")
    table = ok(postroom(config, "suppression", "list", "--global"))
    assert "bob@example.net" in table and "carol@" not in table
    assert ok(postroom(config, "suppression", "remove", "bob@example.net")) == (
        "bob@example.net is no longer suppressed globally\n"
    )
    gone = one_line_error(postroom(config, "suppression", "remove", "bob@example.net"))
    assert gone == "postroom: bob@example.net is not suppressed globally"
    bad = one_line_error(postroom(config, "suppression", "add", "no-at-sign"))
    assert bad.startswith("postroom: 'no-at-sign' is not a valid address")


def test_webhook_test_posts_a_signed_event_and_list_and_history_read(
    config: Path, tmp_path: Path
) -> None:
    seen: list[Request] = []

    def receiver(request: Request) -> Reply:
        seen.append(request)
        return Reply(204)

    with serve(receiver) as http, serve(lambda r: Reply(500)) as broken:
        config.write_text(
            config.read_text()
            + f'[[webhooks]]\nname = "app"\nurl = "{http.url}/events"\nsecret = "s3cret"\n'
            + f'[[webhooks]]\nname = "down"\nurl = "{broken.url}"\nsecret_env = "DOWN_KEY"\n'
            + 'events = ["bounced"]\n'
        )
        out = ok(postroom(config, "webhook", "test", "app"))
        assert out.startswith("webhook app: 204 for test event ev_")
        [request] = seen
        assert verify("s3cret", request.headers, request.body, now=time.time())
        assert request.json()["reason"] == "test"
        missing = one_line_error(postroom(config, "webhook", "test", "down"), code=2)
        assert missing == (
            "postroom: webhooks.down.secret_env: the environment variable DOWN_KEY is not set"
        )
        unknown = one_line_error(postroom(config, "webhook", "test", "nope"))
        assert unknown == "postroom: no webhook named 'nope' (app, down)"
    listed = json.loads(ok(postroom(config, "webhook", "list", "--json")))
    assert [(w["name"], w["events"], w["pending"]) for w in listed["webhooks"]] == [
        ("app", [], 0),
        ("down", ["bounced"], 0),
    ]
    assert ok(postroom(config, "webhook", "history")) == "No webhook deliveries.\n"

"""``postroom log``, ``log show`` and the queue actions, on a store seeded through its API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from postroom.config import load
from postroom.ids import new_queue_id
from postroom.mail import Envelope, Recipient, Source, SourceKind
from postroom.mail.address import parse_address
from postroom.mail.spool import SpooledBody
from postroom.store import NewMessage, RecipientStatus, open_store
from postroom.store.models import Attempt, RecipientUpdate
from tests.cli.test_cli import ok, one_line_error, postroom
from tests.support.servers import make_store

NOW = time.time()
EARLIER = NOW - 3 * 3600  # the first message: three hours ago
LATER = NOW - 3600  # the second: one hour ago


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "postroom.toml"
    path.write_text(f'hostname = "mail.test"\ndata_dir = "{tmp_path / "data"}"\n')
    return make_store(path)


@dataclass(frozen=True)
class Seeded:
    first: str  # app@example.com -> ann@example.org (delivered), bob@example.net (deferred)
    second: str  # alerts@example.com -> carol@example.org (bounced)


def _message(received_at: float, sender: str, recipients: Sequence[str]) -> NewMessage:
    body = SpooledBody()
    body.write(b"Subject: hello\r\n\r\nHello.\r\n")
    return NewMessage(
        id=new_queue_id(received_at),
        envelope=Envelope(
            sender=parse_address(sender),
            recipients=tuple(Recipient(parse_address(r)) for r in recipients),
        ),
        source=Source(
            kind=SourceKind.SMTP,
            principal=sender,
            client_ip="192.0.2.7",
            helo="client.example",
            protocol="ESMTPSA",
            tls="TLSv1.3",
        ),
        received_at=received_at,
        header=b"Received: from client.example by mail.test\r\n",
        body=body,
    )


def _attempt(message_id: str, recipient: str, at: float, mailer: str, **more: object) -> Attempt:
    fields: dict[str, object] = {
        "disposition": "delivered",
        "code": 250,
        "enhanced": "2.0.0",
        "text": "Ok: queued as 4XYZ",
        "host": f"{mailer}.example.net",
        "ip": "198.51.100.25",
        "port": 587,
        "tls": "TLSv1.3",
        "duration": 0.42,
        **more,
    }
    return Attempt(message_id, recipient, at, mailer, **fields)  # type: ignore[arg-type]


@pytest.fixture
def seeded(config: Path) -> Seeded:
    first = _message(EARLIER, "app@example.com", ["ann@example.org", "bob@example.net"])
    second = _message(LATER, "alerts@example.com", ["carol@example.org"])
    tried = EARLIER + 60
    first_attempts = [
        _attempt(
            first.id,
            "ann@example.org",
            tried,
            "relay",
            disposition="deferred",
            code=None,
            enhanced="4.4.1",
            text="Connection refused",
            ip=None,
            tls=None,
        ),
        _attempt(first.id, "ann@example.org", tried, "backup"),
        _attempt(
            first.id,
            "bob@example.net",
            tried,
            "mx",
            disposition="deferred",
            code=451,
            enhanced="4.7.1",
            text="Greylisted, try later",
            host="mx.example.net",
            port=25,
        ),
    ]
    first_updates = [
        RecipientUpdate("ann@example.org", RecipientStatus.DELIVERED, None, "250 2.0.0 Ok"),
        RecipientUpdate(
            "bob@example.net", RecipientStatus.DEFERRED, NOW + 600, "451 4.7.1 Greylisted"
        ),
    ]
    second_attempts = [
        _attempt(
            second.id,
            "carol@example.org",
            LATER + 5,
            "mx",
            disposition="bounced",
            code=550,
            enhanced="5.1.1",
            text="No such user",
        )
    ]
    second_updates = [
        RecipientUpdate(
            "carol@example.org", RecipientStatus.BOUNCED, None, "550 5.1.1 No such user"
        )
    ]

    async def put() -> None:
        settings = load(config)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = await open_store(settings.storage_url)
        try:
            for message in (first, second):
                await store.enqueue(message)
            await store.record_outcomes(first.id, first_updates, first_attempts)
            await store.record_outcomes(second.id, second_updates, second_attempts)
        finally:
            await store.aclose()

    asyncio.run(put())
    return Seeded(first.id, second.id)


def logged(config: Path, *args: str) -> list[str]:
    """The ids ``postroom log --json`` lists."""
    return [m["id"] for m in json.loads(ok(postroom(config, "log", "--json", *args)))]


# -- postroom log ----------------------------------------------------------------------


def test_an_empty_log(config: Path) -> None:
    assert ok(postroom(config, "log")) == "No messages.\n"
    assert logged(config) == []


def test_the_log_is_newest_first_with_each_recipients_status(config: Path, seeded: Seeded) -> None:
    assert logged(config) == [seeded.second, seeded.first]
    entries = json.loads(ok(postroom(config, "log", "--json")))
    statuses = {r["address"]: r["status"] for e in entries for r in e["recipients"]}
    assert statuses == {
        "ann@example.org": "delivered",
        "bob@example.net": "deferred",
        "carol@example.org": "bounced",
    }
    table = ok(postroom(config, "log"))
    for expected in (
        seeded.first,
        seeded.second,
        "app@example.com",
        "ann@example.org delivered",
        "bob@example.net deferred",
        "carol@example.org bounced",
        "451 4.7.1 Greylisted",
        "550 5.1.1 No such user",
    ):
        assert expected in table
    assert table.index(seeded.second) < table.index(seeded.first)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--status", "bounced"), ["second"]),
        (("--status", "deferred"), ["first"]),
        (("--status", "queued"), []),
        (("--to", "ann@"), ["first"]),
        (("--to", "EXAMPLE.ORG"), ["second", "first"]),
        (("--from", "alerts"), ["second"]),
        (("--since", "2h"), ["second"]),
        (("--since", "90m"), ["second"]),
        (("--since", "1d"), ["second", "first"]),
        (("--limit", "1"), ["second"]),
    ],
)
def test_filters(config: Path, seeded: Seeded, args: tuple[str, ...], expected: list[str]) -> None:
    assert logged(config, *args) == [getattr(seeded, name) for name in expected]


def test_since_an_iso_time_and_paging_with_the_cursor(config: Path, seeded: Seeded) -> None:
    two_hours_ago = datetime.fromtimestamp(NOW - 7200, UTC)
    assert logged(config, "--since", two_hours_ago.isoformat()) == [seeded.second]
    naive_utc = two_hours_ago.replace(tzinfo=None).isoformat(timespec="seconds")
    assert logged(config, "--since", naive_utc) == [seeded.second]
    assert logged(config, "--since", two_hours_ago.date().isoformat()) != []
    assert logged(config, "--cursor", seeded.second) == [seeded.first]


@pytest.mark.parametrize("args", [("--since", "yesterday"), ("--status", "lost"), ("--limit", "0")])
def test_bad_filters_are_usage_errors(config: Path, args: tuple[str, ...]) -> None:
    result = postroom(config, "log", *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr


# -- postroom log show -----------------------------------------------------------------


def test_show_gives_the_timeline(config: Path, seeded: Seeded) -> None:
    shown = json.loads(ok(postroom(config, "log", "show", seeded.first, "--json")))
    assert shown["id"] == seeded.first and shown["sender"] == "app@example.com"
    received, *attempts = shown["timeline"]
    assert received["event"] == "received"
    assert received["client_ip"] == "192.0.2.7" and received["protocol"] == "ESMTPSA"
    assert [(a["recipient"], a["mailer"], a["disposition"]) for a in attempts] == [
        ("ann@example.org", "relay", "deferred"),
        ("ann@example.org", "backup", "delivered"),
        ("bob@example.net", "mx", "deferred"),
    ]
    backup = attempts[1]
    assert backup["reply"] == {"code": 250, "enhanced": "2.0.0", "text": "Ok: queued as 4XYZ"}
    assert backup["host"] == "backup.example.net" and backup["ip"] == "198.51.100.25"
    assert backup["port"] == 587 and backup["tls"] == "TLSv1.3"
    assert backup["duration"] == pytest.approx(0.42)
    assert attempts[0]["reply"]["code"] is None
    assert {r["address"]: r["status"] for r in shown["recipients"]} == {
        "ann@example.org": "delivered",
        "bob@example.net": "deferred",
    }

    text = ok(postroom(config, "log", "show", seeded.first))
    for expected in (
        "received",
        "ESMTPSA",
        "relay",
        "4.4.1 Connection refused",
        "backup.example.net [198.51.100.25]:587",
        "250 2.0.0 Ok: queued as 4XYZ",
        "0.4 s",
        "451 4.7.1 Greylisted, try later",
        "mx.example.net [198.51.100.25]:25",
    ):
        assert expected in text, expected
    assert text.index("relay") < text.index("backup") < text.index("mx.example.net")


def test_show_an_unknown_id_is_one_line(config: Path) -> None:
    result = postroom(config, "log", "show", "0123456789ABCDEF")
    assert one_line_error(result) == "postroom: no message with id '0123456789ABCDEF'"


# -- queue actions ---------------------------------------------------------------------


def test_hold_and_release(config: Path, seeded: Seeded) -> None:
    assert ok(postroom(config, "queue", "hold", seeded.first)) == f"message {seeded.first} held\n"
    assert logged(config, "--status", "held") == [seeded.first]
    shown = json.loads(ok(postroom(config, "queue", "show", seeded.first, "--json")))
    assert shown["held"] is True
    assert "deferred (held)" in ok(postroom(config, "log"))
    released = ok(postroom(config, "queue", "release", seeded.first)).splitlines()
    assert released == [
        f"message {seeded.first} released",
        no_server(config, "released mail is tried"),
    ]
    assert logged(config, "--status", "held") == []


def test_hold_all_and_release_all(config: Path, seeded: Seeded) -> None:
    # Only the first message has a recipient waiting (bob, deferred); the second bounced.
    assert ok(postroom(config, "queue", "hold", "--all")) == "1 message held\n"
    assert logged(config, "--status", "held") == [seeded.first]
    assert ok(postroom(config, "queue", "retry", "--all")).startswith("0 recipients")
    released = ok(postroom(config, "queue", "release", "--all")).splitlines()
    assert released == ["1 message released", no_server(config, "released mail is tried")]
    assert logged(config, "--status", "held") == []
    assert ok(postroom(config, "queue", "release", "--all")).startswith("0 messages released")


def test_a_queue_command_says_when_delivery_is_paused(config: Path, seeded: Seeded) -> None:
    config.write_text(config.read_text() + "[delivery]\npaused = true\n")
    retried = ok(postroom(config, "queue", "retry", seeded.first)).splitlines()
    assert retried == [
        f"1 recipient of {seeded.first} will be tried now",
        "delivery is paused (delivery.paused): they are tried once it is not",
    ]


def no_server(config: Path, waiting: str) -> str:
    return f"no server is running for {config.parent / 'data'}: {waiting} once one starts"


def test_retry_one_or_all(config: Path, seeded: Seeded) -> None:
    retried = ok(postroom(config, "queue", "retry", seeded.first)).splitlines()
    assert retried == [
        f"1 recipient of {seeded.first} will be tried now",
        no_server(config, "they are tried"),
    ]
    assert ok(postroom(config, "queue", "retry", seeded.second)) == (
        f"0 recipients of {seeded.second} will be tried now\n"  # nothing waits: no more said
    )
    assert ok(postroom(config, "queue", "retry", "--all")).startswith(
        "1 recipient in the queue will be tried now\n"
    )
    shown = json.loads(ok(postroom(config, "queue", "show", seeded.first, "--json")))
    bob = next(r for r in shown["recipients"] if r["address"] == "bob@example.net")
    due = datetime.fromisoformat(bob["next_attempt_at"]).timestamp()
    assert due <= time.time() + 1


@pytest.mark.parametrize("action", ["retry", "hold", "release"])
def test_an_action_needs_an_id_or_all(config: Path, action: str) -> None:
    for args in ((), ("0123456789ABCDEF", "--all")):
        result = postroom(config, "queue", action, *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "give either a message ID or --all" in result.stderr
    usage = ok(postroom(config, "queue", action, "--help"))
    assert f"postroom queue {action} [OPTIONS] (ID | --all)" in usage
    assert "`" not in usage


def test_delete(config: Path, seeded: Seeded) -> None:
    deleted = ok(postroom(config, "queue", "delete", seeded.second))
    assert deleted == f"message {seeded.second} deleted\n"
    assert logged(config) == [seeded.first]
    again = postroom(config, "queue", "delete", seeded.second)
    assert one_line_error(again) == f"postroom: no message with id '{seeded.second}'"


@pytest.mark.parametrize("action", ["retry", "hold", "release", "delete"])
def test_an_unknown_id_is_one_line(config: Path, action: str) -> None:
    result = postroom(config, "queue", action, "0123456789ABCDEF")
    assert one_line_error(result) == "postroom: no message with id '0123456789ABCDEF'"


def test_help_lists_the_new_commands(config: Path) -> None:
    assert {"log", "route"} <= set(ok(postroom(config, "--help")).split())
    queue_help = ok(postroom(config, "queue", "--help"))
    for action in ("retry", "hold", "release", "delete"):
        assert action in queue_help

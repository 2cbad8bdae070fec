"""The postroom command as users run it: a real process, its output and its exit code."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from postroom.config import load
from postroom.ids import new_queue_id
from postroom.mail import DsnRequest, Envelope, Notify, Recipient, Ret, Source, SourceKind
from postroom.mail.address import parse_address
from postroom.mail.spool import SpooledBody
from postroom.store import NewMessage, open_store
from postroom.store.models import UserRecord
from tests.support.servers import make_store

RECEIVED_AT = 1_800_000_000.0


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "postroom.toml"
    path.write_text(f'hostname = "mail.test"\ndata_dir = "{tmp_path / "data"}"\n')
    return make_store(path)


def postroom(
    config: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POSTROOM_CONFIG": str(config), "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "postroom", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("postroom: ")
    return lines[0]


# -- users ---------------------------------------------------------------------------


def test_user_lifecycle(config: Path) -> None:
    added = postroom(config, "user", "add", "App@Example.com", "--password-stdin", stdin="pw 1\n")
    assert ok(added) == "user app@example.com added; may send as example.com\n"

    duplicate = postroom(config, "user", "add", "app@example.com", "--password-stdin", stdin="x\n")
    assert one_line_error(duplicate) == "postroom: user app@example.com already exists"

    listed = json.loads(ok(postroom(config, "user", "list", "--json")))
    assert [u["address"] for u in listed] == ["app@example.com"]
    assert listed[0]["sender_domains"] == []
    assert (listed[0]["any_sender"], listed[0]["may_send_as"]) == (False, "example.com")
    assert "password_hash" not in listed[0]

    changed = postroom(
        config, "user", "passwd", "app@example.com", "--password-stdin", stdin="pw 2"
    )
    assert ok(changed) == "password of app@example.com changed\n"
    assert (
        ok(postroom(config, "user", "remove", "app@example.com"))
        == "user app@example.com removed\n"
    )
    assert json.loads(ok(postroom(config, "user", "list", "--json"))) == []

    gone = postroom(config, "user", "remove", "app@example.com")
    assert one_line_error(gone) == "postroom: no such user: app@example.com"


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("a/b@example.com", "'a/b@example.com' cannot be a mailbox: it holds '/'"),
        ('"../../x"@example.com', "cannot be a mailbox: it holds '/'"),
        ('".x"@example.com', "cannot be a mailbox: it starts with a dot"),
        (".x@example.com", "is not a valid address"),
        ("a\\b@example.com", "is not a valid address"),
    ],
)
def test_user_add_refuses_local_parts_that_cannot_be_a_mailbox(
    config: Path, address: str, problem: str
) -> None:
    refused = postroom(config, "user", "add", address, "--password-stdin", stdin="pw\n")
    assert problem in one_line_error(refused)
    assert json.loads(ok(postroom(config, "user", "list", "--json"))) == []


def test_a_user_added_before_the_mailbox_rule_can_still_be_removed(config: Path) -> None:
    async def add_legacy() -> None:
        store = await open_store(load(config).storage_url)
        try:
            await store.add_user(UserRecord("a/b@example.com", "x", (), RECEIVED_AT))
        finally:
            await store.aclose()

    asyncio.run(add_legacy())
    assert ok(postroom(config, "user", "remove", "a/b@example.com")) == (
        "user a/b@example.com removed\n"
    )


def test_the_password_from_stdin_is_the_one_stored(config: Path) -> None:
    ok(
        postroom(
            config, "user", "add", "app@example.com", "--password-stdin", stdin=" spaced pw \r\n"
        )
    )
    ok(postroom(config, "user", "passwd", "app@example.com", "--password-stdin", stdin="next\n"))

    async def check() -> tuple[object, object]:
        from postroom.directory import Users

        store = await open_store(load(config).storage_url)
        try:
            users = Users(store)
            return (
                await users.verify("app@example.com", "next"),
                await users.verify("app@example.com", " spaced pw "),
            )
        finally:
            await store.aclose()

    current, old = asyncio.run(check())
    assert current is not None and old is None


def test_user_with_sender_domains_and_the_table(config: Path) -> None:
    ok(
        postroom(
            config,
            *("user", "add", "app@example.com", "--password-stdin"),
            *("--sender-domain", "example.com", "--sender-domain", "bücher.example"),
            stdin="pw\n",
        )
    )
    listed = json.loads(ok(postroom(config, "user", "list", "--json")))
    assert listed[0]["sender_domains"] == ["example.com", "xn--bcher-kva.example"]
    table = ok(postroom(config, "user", "list"))
    assert "app@example.com" in table and "xn--bcher-kva.example" in table


def test_any_sender_users_say_so_in_the_list(config: Path) -> None:
    ok(postroom(config, "user", "add", "a@example.com", "--password-stdin", stdin="pw\n"))
    ok(
        postroom(
            config, "user", "add", "b@example.com", "--any-sender", "--password-stdin", stdin="pw\n"
        )
    )
    listed = json.loads(ok(postroom(config, "user", "list", "--json")))
    assert [(u["address"], u["any_sender"], u["may_send_as"]) for u in listed] == [
        ("a@example.com", False, "example.com"),
        ("b@example.com", True, "any domain"),
    ]
    assert "any domain" in ok(postroom(config, "user", "list"))
    both = postroom(
        config,
        *("user", "add", "c@example.com", "--any-sender", "--sender-domain", "x.test"),
        stdin="pw\n",
    )
    assert both.returncode == 2 and "--any-sender" in both.stderr


def test_user_senders_narrows_a_user_that_could_send_as_any_domain(config: Path) -> None:
    # What an upgraded user made without --sender-domain is: any_sender, until narrowed.
    ok(
        postroom(
            config, "user", "add", "a@example.com", "--any-sender", "--password-stdin", stdin="pw\n"
        )
    )
    narrowed = postroom(
        config, "user", "senders", "a@example.com", "--sender-domain", "Bücher.example"
    )
    assert ok(narrowed) == "user a@example.com may send as example.com, xn--bcher-kva.example\n"
    [listed] = json.loads(ok(postroom(config, "user", "list", "--json")))
    assert (listed["any_sender"], listed["sender_domains"]) == (False, ["xn--bcher-kva.example"])
    assert ok(postroom(config, "user", "senders", "a@example.com")).endswith(
        "may send as example.com\n"
    )
    assert "any domain" in ok(postroom(config, "user", "senders", "a@example.com", "--any-sender"))
    missing = postroom(config, "user", "senders", "nobody@example.com")
    assert one_line_error(missing) == "postroom: no such user: nobody@example.com"


def test_no_users_yet(config: Path) -> None:
    assert ok(postroom(config, "user", "list")) == "No users.\n"


@pytest.mark.parametrize("address", ["no-at-sign", "a b@example.com", "app@exa mple.com"])
def test_a_bad_address_is_one_line(config: Path, address: str) -> None:
    result = postroom(config, "user", "add", address, "--password-stdin", stdin="pw\n")
    assert "is not a valid address" in one_line_error(result)


def test_an_empty_password_is_refused(config: Path) -> None:
    result = postroom(config, "user", "add", "app@example.com", "--password-stdin", stdin="\n")
    assert one_line_error(result) == "postroom: the password is empty"


# -- domains -------------------------------------------------------------------------


def test_domain_lifecycle_with_an_idn(config: Path) -> None:
    assert ok(postroom(config, "domain", "add", "example.com")) == "domain example.com added\n"
    added = ok(postroom(config, "domain", "add", "Bücher.example"))
    assert added == "domain bücher.example (xn--bcher-kva.example) added\n"

    again = postroom(config, "domain", "add", "xn--bcher-kva.example")
    assert one_line_error(again) == "postroom: domain xn--bcher-kva.example already exists"

    assert json.loads(ok(postroom(config, "domain", "list", "--json"))) == [
        {"name": "example.com", "unicode": "example.com"},
        {"name": "xn--bcher-kva.example", "unicode": "bücher.example"},
    ]
    table = ok(postroom(config, "domain", "list"))
    assert "bücher.example" in table and "xn--bcher-kva.example" in table

    removed = ok(postroom(config, "domain", "remove", "BÜCHER.example"))
    assert removed == "domain bücher.example (xn--bcher-kva.example) removed\n"
    listed = json.loads(ok(postroom(config, "domain", "list", "--json")))
    assert [d["name"] for d in listed] == ["example.com"]

    unknown = postroom(config, "domain", "remove", "nowhere.example")
    assert one_line_error(unknown) == "postroom: no such domain: nowhere.example"


def test_a_bad_domain_is_one_line(config: Path) -> None:
    result = postroom(config, "domain", "add", "not a domain")
    assert one_line_error(result) == "postroom: 'not a domain' is not a valid domain name"


# -- the queue -------------------------------------------------------------------------


def enqueue(config: Path, received_at: float = RECEIVED_AT) -> tuple[str, int]:
    """Put one message in the store the way intake would; (queue id, size)."""
    body = SpooledBody()
    body.write(b"Subject: hello\r\n\r\nHello.\r\n")
    message = NewMessage(
        id=new_queue_id(received_at),
        envelope=Envelope(
            sender=parse_address("app@example.com"),
            recipients=(
                Recipient(
                    parse_address("ann@example.org"),
                    notify=frozenset({Notify.FAILURE, Notify.DELAY}),
                    orcpt="rfc822;ann@example.org",
                ),
                Recipient(parse_address("bob@example.net")),
            ),
            dsn=DsnRequest(ret=Ret.HDRS, envid="envelope-7"),
            body="8BITMIME",
        ),
        source=Source(
            kind=SourceKind.SMTP,
            principal="app@example.com",
            client_ip="192.0.2.7",
            helo="client.example",
            protocol="ESMTPSA",
            tls="TLSv1.3 with cipher TLS_AES_256_GCM_SHA384",
        ),
        received_at=received_at,
        header=b"Received: from client.example by mail.test\r\n",
        body=body,
    )

    async def put() -> None:
        settings = load(config)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = await open_store(settings.storage_url)
        try:
            await store.enqueue(message)
        finally:
            await store.aclose()

    asyncio.run(put())
    return message.id, message.size


def test_an_empty_queue(config: Path) -> None:
    assert ok(postroom(config, "queue", "list")) == "The queue is empty.\n"
    assert json.loads(ok(postroom(config, "queue", "list", "--json"))) == []


def test_an_unknown_id_is_one_line(config: Path) -> None:
    result = postroom(config, "queue", "show", "0123456789ABCDEF")
    assert one_line_error(result) == "postroom: no message with id '0123456789ABCDEF'"


def test_queue_list_and_show(config: Path) -> None:
    queue_id, size = enqueue(config)

    listed = json.loads(ok(postroom(config, "queue", "list", "--json")))
    assert [m["id"] for m in listed] == [queue_id]
    assert listed[0]["size"] == size

    table = ok(postroom(config, "queue", "list"))
    for expected in (queue_id, "app@example.com", "ann@example.org", "queued", "192.0.2.7"):
        assert expected in table
    assert "2027-01-15 08:00:00 UTC" in table

    shown = json.loads(ok(postroom(config, "queue", "show", queue_id, "--json")))
    assert shown["id"] == queue_id
    assert shown["received_at"] == "2027-01-15T08:00:00+00:00"
    assert shown["size"] == size
    assert shown["sender"] == "app@example.com"
    assert shown["dsn"] == {"ret": "HDRS", "envid": "envelope-7"}
    assert shown["body"] == "8BITMIME"
    assert shown["source"]["kind"] == "smtp"
    assert shown["source"]["principal"] == "app@example.com"
    assert shown["source"]["client_ip"] == "192.0.2.7"
    assert shown["source"]["helo"] == "client.example"
    assert shown["source"]["tls"].startswith("TLSv1.3")
    ann, bob = shown["recipients"]
    assert ann["address"] == "ann@example.org" and ann["status"] == "queued"
    assert set(ann["notify"].split(",")) == {"FAILURE", "DELAY"}
    assert ann["orcpt"] == "rfc822;ann@example.org"
    assert bob["notify"] is None and bob["orcpt"] is None

    text = ok(postroom(config, "queue", "show", queue_id))
    for expected in (
        queue_id,
        "envelope-7",
        "HDRS",
        "client.example",
        "ESMTPSA",
        "rfc822;ann@example.org",
    ):
        assert expected in text


def test_queue_list_limit(config: Path) -> None:
    first, _ = enqueue(config)
    enqueue(config, RECEIVED_AT + 60)
    listed = json.loads(ok(postroom(config, "queue", "list", "--json", "--limit", "1")))
    assert [m["id"] for m in listed] == [first]
    bad = postroom(config, "queue", "list", "--limit", "0")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


# -- configuration through the command line --------------------------------------------


def test_config_option_after_the_command(config: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text(f'hostname = "mail.test"\ndata_dir = "{tmp_path / "other"}"\n')
    make_store(other)
    ok(postroom(config, "domain", "add", "example.com", "--config", str(other)))
    assert json.loads(ok(postroom(config, "domain", "list", "--json"))) == []
    assert len(json.loads(ok(postroom(other, "domain", "list", "--json")))) == 1


def test_a_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nmax_recipients = 0\n")
    result = postroom(bad, "user", "list")
    assert one_line_error(result, 2) == "postroom: limits.max_recipients: must be at least 1"


def test_a_missing_config_exits_2(tmp_path: Path) -> None:
    result = postroom(tmp_path / "missing.toml", "domain", "list")
    assert one_line_error(result, 2) == f"postroom: {tmp_path / 'missing.toml'}: no such file"


def test_help_lists_the_commands(config: Path) -> None:
    text = ok(postroom(config, "--help"))
    for command in ("domain", "queue", "serve", "user"):
        assert command in text

"""``postroom mailer test`` against a loopback provider fake, ``mailer status`` from the
store, and no secret in any command's output (``route explain`` included)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.config import load
from postroom.store import open_store
from tests.cli.test_cli import ok, one_line_error, postroom
from tests.delivery.providers.fakes import SendgridFake
from tests.store.factories import attempt, delivered, new_message, to
from tests.support.http_fake import FakeHttp, Reply, serve
from tests.support.servers import make_store

KEY = "SG.cli-secret-0123456789"


@pytest.fixture
def sendgrid() -> Iterator[tuple[SendgridFake, FakeHttp]]:
    fake = SendgridFake(key=KEY)
    with serve(fake) as server:
        yield fake, server


def _config(tmp_path: Path, url: str, key: str = KEY, *, per_day: int = 500) -> Path:
    path = tmp_path / "postroom.toml"
    path.write_text(
        f'hostname = "mail.test"\ndata_dir = "{tmp_path / "data"}"\n\n'
        f'[[mailers]]\nname = "sg"\ntype = "sendgrid"\nbase_url = "{url}"\n'
        f'api_key = "{key}"\ntimeout = 5.0\nlimits.per_day = {per_day}\n\n'
        f'[[routes]]\nname = "all"\nmailers = ["sg", "mx"]\n'
    )
    return make_store(path)


def test_mailer_test_sends_through_that_mailer_and_shows_the_answer(
    tmp_path: Path, sendgrid: tuple[SendgridFake, FakeHttp]
) -> None:
    fake, server = sendgrid
    out = ok(
        postroom(_config(tmp_path, server.url), "mailer", "test", "sg", "--to", "ann@example.org")
    )
    assert fake.problems == []
    [body] = fake.received
    assert body["personalizations"] == [{"to": [{"email": "ann@example.org"}]}]
    assert body["from"] == {"email": "postroom@mail.test"}
    assert body["subject"] == "postroom test through mailer sg"
    assert body["headers"]["Message-ID"].endswith("@mail.test>")
    assert "HTTP 202" in out
    assert "x-message-id  sg-1" in out
    assert "accepted (2.0.0)" in out
    assert "delivered" in out and "250 2.0.0 sg: accepted as sg-1" in out
    assert KEY not in out


def test_mailer_test_shows_a_refusal_and_fails(
    tmp_path: Path, sendgrid: tuple[SendgridFake, FakeHttp]
) -> None:
    _, server = sendgrid
    wrong = "SG.wrong-0123456789"
    result = postroom(
        _config(tmp_path, server.url, wrong), "mailer", "test", "sg", "--to", "a@b.test"
    )
    assert result.returncode == 1
    assert "HTTP 401" in result.stdout
    assert "authorization grant is invalid" in result.stdout
    assert "misconfigured (4.7.0)" in result.stdout
    assert wrong not in result.stdout + result.stderr


def test_mailer_test_reports_no_answer(tmp_path: Path) -> None:
    with serve(SendgridFake(key=KEY, replies=[Reply(drop=True)])) as server:
        config = _config(tmp_path, server.url)
        result = postroom(config, "mailer", "test", "sg", "--to", "a@b.test")
    assert result.returncode == 1
    assert "none: connection to 127.0.0.1 failed" in result.stdout
    assert "temporary (4.4.2)" in result.stdout


def test_mailer_test_bad_input_is_one_line(tmp_path: Path) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9")
    assert "no mailer named 'nope'" in one_line_error(
        postroom(config, "mailer", "test", "nope", "--to", "a@b.test")
    )
    assert "is not an address" in one_line_error(
        postroom(config, "mailer", "test", "sg", "--to", "not an address")
    )
    config.write_text(
        config.read_text().replace(f'api_key = "{KEY}"', 'api_key_env = "POSTROOM_UNSET_KEY"')
    )
    line = one_line_error(postroom(config, "mailer", "test", "sg", "--to", "a@b.test"), code=2)
    unset = "the environment variable POSTROOM_UNSET_KEY is not set"
    assert line == f"postroom: mailers.sg.api_key_env: {unset}"


def test_mailer_status_reads_the_email_log(tmp_path: Path) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9", per_day=500)
    now = time.time()

    async def seed() -> None:
        settings = load(config)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = await open_store(settings.storage_url)
        message = new_message(recipients=to("a@example.net"), at=now)
        await store.enqueue(message)
        sent = dataclasses.replace(
            attempt(message.id, "a@example.net", now, mailer="sg"), text="sg: accepted as m1"
        )
        failed = attempt(
            message.id,
            "a@example.net",
            now - 60,
            "deferred",
            mailer="sg",
            code=451,
            text="sg: HTTP 503 busy",
        )
        await store.record_outcomes(message.id, [delivered("a@example.net")], [failed, sent])
        await store.aclose()

    asyncio.run(seed())
    out = ok(postroom(config, "mailer", "status"))
    [line] = [row for row in out.splitlines() if row.startswith("sg ")]
    assert "sendgrid" in line
    assert "sg: HTTP 503 busy" in line
    assert "1/500" in line  # today, against limits.per_day
    assert line.split()[-2:] == ["1", "-"]  # this hour (no per_hour limit); no OAuth token
    assert [row.split()[0] for row in out.splitlines()[1:]] == ["local", "mx", "sg"]

    listed = json.loads(ok(postroom(config, "mailer", "status", "--json")))
    assert [m["name"] for m in listed] == ["local", "mx", "sg"]
    sg = listed[2]
    assert sg["type"] == "sendgrid"
    assert (sg["last_success"], sg["last_error"]) == ("sg: accepted as m1", "sg: HTTP 503 busy")
    assert sg["last_error_at"] < sg["last_success_at"]  # ISO 8601 in UTC sorts by time
    assert (sg["delivered_today"], sg["per_day"], sg["per_hour"]) == (1, 500, None)
    assert sg["delivered_this_hour"] == 1 and sg["token"] is None


def test_route_explain_and_settings_never_show_the_key(tmp_path: Path) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9")
    text = ok(
        postroom(config, "route", "explain", "--to", "ann@example.org", "--from", "app@mail.test")
    )
    assert "the sendgrid API at http://127.0.0.1:9" in text
    as_json = ok(postroom(config, "route", "explain", "--to", "ann@example.org", "--json"))
    [explained] = json.loads(as_json)
    assert explained["mailers"][0] == {
        "name": "sg", "type": "sendgrid", "delivers_to": "the sendgrid API at http://127.0.0.1:9"
    }  # fmt: skip
    assert KEY not in text + as_json
    assert KEY not in repr(load(config))

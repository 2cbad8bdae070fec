"""``postroom route explain``: the route, the chain in order, and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import ok, one_line_error, postroom
from tests.support.servers import make_store

CONFIG = """
hostname = "mail.test"
data_dir = "{data}"

[[mailers]]
name = "relay"
type = "smtp"
host = "smtp.example.net"

[[mailers]]
name = "backup"
type = "smtp"
host = "smtp2.example.net"
port = 465
tls = "implicit"

[[routes]]
name = "billing"
mailers = ["relay", "backup", "mx"]
conditions = [{{ field = "header", header = "X-Stream", value = "billing" }}]
any_of = [
  {{ conditions = [{{ field = "recipient_domain", value = "customers.example" }}] }},
  {{ match = "any", conditions = [
      {{ field = "source", value = "billing-api" }},
      {{ field = "subject", operator = "regex", value = "^Invoice \\\\d+" }},
  ] }},
]

[[routes]]
name = "partners"
mailers = ["backup"]
conditions = [{{ field = "sender_domain", value = "partners.example" }}]

[[routes]]
name = "news"
mailers = ["relay"]
conditions = [{{ field = "body", operator = "contains", value = "unsubscribe" }}]
"""

MESSAGE = (
    b"From: Billing <billing@example.com>\r\n"
    b"Subject: Invoice 42\r\n"
    b"X-Stream: billing\r\n"
    b"\r\n"
    b"Your invoice.\r\n"
)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "postroom.toml"
    path.write_text(CONFIG.format(data=tmp_path / "data"))
    return make_store(path)


@pytest.fixture
def eml(tmp_path: Path) -> Path:
    path = tmp_path / "invoice.eml"
    path.write_bytes(MESSAGE)
    return path


def explain(config: Path, *args: str, stdin: str | None = None) -> list[dict[str, Any]]:
    result = ok(postroom(config, "route", "explain", "--json", *args, stdin=stdin))
    explained: list[dict[str, Any]] = json.loads(result)
    return explained


def test_a_matching_route_with_its_chain_in_order(config: Path, eml: Path) -> None:
    [billing] = explain(config, "--to", "ann@example.org", str(eml))
    assert billing["recipient"] == "ann@example.org"
    assert billing["route"] == "billing" and billing["default"] is False
    assert [m["name"] for m in billing["mailers"]] == ["relay", "backup", "mx"]
    assert billing["mailers"][0] == {
        "name": "relay",
        "type": "smtp",
        "delivers_to": "smtp.example.net:587 (starttls)",
    }
    assert billing["reason"] == "route 'billing' is the first whose conditions match"
    [checked] = billing["checked"]
    assert checked["matched"] is True
    assert checked["conditions"] == [
        {"condition": "header X-Stream equals 'billing'", "matched": True, "seen": ["billing"]}
    ]
    first, second = checked["any_of"]
    assert first["matched"] is False and second["matched"] is True
    assert [c["matched"] for c in second["conditions"]] == [False, True]


def test_the_text_shows_route_chain_and_conditions(config: Path, eml: Path) -> None:
    text = ok(postroom(config, "route", "explain", "--to", "ann@example.org", str(eml)))
    for expected in (
        "billing",
        "route 'billing' is the first whose conditions match",
        "1  relay   smtp  smtp.example.net:587 (starttls)",
        "2  backup  smtp  smtp2.example.net:465 (implicit)",
        "3  mx      mx",
        "[x] header X-Stream equals 'billing' (saw 'billing')",
        "[ ] recipient_domain equals 'customers.example' (saw 'example.org')",
        "[x] subject matches '^Invoice \\\\d+' (saw 'Invoice 42')",
    ):
        assert expected in text, expected
    assert text.index("relay") < text.index("backup") < text.index("3  mx")


def test_the_defaults_when_nothing_matches(config: Path) -> None:
    ok(postroom(config, "domain", "add", "example.test"))
    local, remote = explain(config, "--to", "ann@example.test", "--to", "bob@example.net")
    assert local["route"] == "default-local" and local["default"] is True
    assert [m["name"] for m in local["mailers"]] == ["local"]
    assert local["reason"] == "no configured route matches, and 'example.test' is a local domain"
    assert [c["route"] for c in local["checked"]] == ["billing", "partners", "news"]
    assert remote["route"] == "default-remote"
    assert remote["mailers"] == [
        {"name": "mx", "type": "mx", "delivers_to": "the recipient domain's MX hosts, port 25"}
    ]


def test_subject_and_source_options(config: Path, eml: Path) -> None:
    # The file's subject no longer matches; the source does.
    plain = b"X-Stream: billing\r\nSubject: Invoice 1\r\n\r\nhi\r\n"
    eml.write_bytes(plain)
    [renamed] = explain(config, "--to", "a@example.org", "--subject", "Grüße", str(eml))
    assert renamed["route"] != "billing"
    subject = renamed["checked"][0]["any_of"][1]["conditions"][1]
    assert subject["seen"] == ["Grüße"]
    [by_source] = explain(
        config, "--to", "a@example.org", "--subject", "Hi", "--source", "billing-api", str(eml)
    )
    assert by_source["route"] == "billing"


def test_subject_replaces_the_one_of_a_bare_lf_file(config: Path, eml: Path) -> None:
    eml.write_bytes(b"X-Stream: billing\nSubject: Invoice 1\n  continued\n\nSubject: Invoice 2\n")
    [replaced] = explain(config, "--to", "a@example.org", "--subject", "Hello", str(eml))
    assert replaced["checked"][0]["any_of"][1]["conditions"][1]["seen"] == ["Hello"]
    assert replaced["checked"][0]["conditions"][0]["seen"] == ["billing"]


def test_the_sender_comes_from_from_or_the_file(config: Path, eml: Path) -> None:
    eml.write_bytes(b"From: Someone <x@partners.example>\r\n\r\nhi\r\n")
    assert explain(config, "--to", "a@example.org", str(eml))[0]["route"] == "partners"
    assert explain(config, "--to", "a@example.org", "--from", "<>", str(eml))[0]["route"] == (
        "default-remote"
    )
    partners = explain(config, "--to", "a@example.org", "--from", "y@PARTNERS.example")
    assert partners[0]["route"] == "partners"


def test_a_message_on_standard_input_and_body_conditions(config: Path) -> None:
    stdin = "Subject: news\r\n\r\nTo unsubscribe, click here.\r\n"
    [news] = explain(config, "--to", "a@example.org", "-", stdin=stdin)
    assert news["route"] == "news"
    assert news["checked"][-1]["conditions"][0]["matched"] is True


def test_a_bad_recipient_is_one_line(config: Path) -> None:
    result = postroom(config, "route", "explain", "--to", "not an address")
    assert one_line_error(result).startswith("postroom: ")


def test_a_recipient_is_required(config: Path) -> None:
    result = postroom(config, "route", "explain")
    assert result.returncode == 2 and "--to" in result.stderr

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.config.settings import Settings
from postroom.intake.policy import (
    ANY_SENDER,
    Principal,
    PrincipalKind,
    SenderRefusal,
    SenderRights,
    author_verdict,
    recipient_verdict,
    sender_verdict,
)
from postroom.intake.principals import (
    RelayNetworks,
    api_key_rights,
    local_principal,
    user_rights,
)
from postroom.mail.address import parse_address
from postroom.mail.authors import read_authors
from postroom.store.models import ApiKeyRecord, UserRecord

USER = Principal("app@example.test", ANY_SENDER)
LIMITED = Principal(
    "news@example.test", SenderRights(frozenset({"example.test", "xn--bcher-kva.test"}))
)
KEY = Principal("shop", SenderRights(frozenset({"partner.test"}), local_domains=True))


@pytest.mark.parametrize(
    ("recipient", "principal", "local", "exists", "expected"),
    [
        ("app@example.test", None, True, True, None),
        ("ghost@example.test", None, True, False, (550, "5.1.1")),
        ("ghost@example.test", USER, True, False, (550, "5.1.1")),
        ("POSTMASTER@example.test", None, True, False, None),
        ("friend@far.test", None, False, False, (550, "5.7.1")),
        ("friend@far.test", USER, False, False, None),
        ("friend@far.test", LIMITED, False, False, None),  # limits senders, not recipients
    ],
)
def test_recipient_verdict(
    recipient: str,
    principal: Principal | None,
    local: bool,
    exists: bool,
    expected: tuple[int, str] | None,
) -> None:
    reply = recipient_verdict(
        parse_address(recipient), principal=principal, local_domain=local, user_exists=exists
    )
    assert (None if reply is None else (reply.code, reply.enhanced)) == expected


@pytest.mark.parametrize(
    ("sender", "principal", "local", "allowed"),
    [
        ("anyone@anywhere.test", None, (), True),
        ("anyone@anywhere.test", USER, (), True),
        ("news@example.test", LIMITED, (), True),
        ("news@bücher.test", LIMITED, (), True),
        ("news@other.test", LIMITED, (), False),
        ("news@other.test", LIMITED, ("other.test",), False),  # a user gets no local domains
        ("shop@partner.test", KEY, (), True),
        ("shop@ours.test", KEY, ("ours.test",), True),
        ("shop@ours.test", KEY, (), False),
    ],
)
def test_sender_verdict(
    sender: str, principal: Principal | None, local: tuple[str, ...], allowed: bool
) -> None:
    reply = sender_verdict(principal, parse_address(sender), local)
    if allowed:
        assert reply is None
    else:
        assert reply is not None and (reply.code, reply.enhanced) == (553, "5.7.1")


def test_null_sender_passes_the_envelope_check_but_not_the_header_check() -> None:
    assert sender_verdict(LIMITED, None) is None
    refusal = author_verdict(LIMITED, read_authors(b"From: ceo@other.test\r\n\r\n"))
    assert refusal is not None and refusal.field == "From"


@pytest.mark.parametrize(
    ("head", "field"),
    [
        (b"From: news@example.test\r\n\r\n", None),
        (b"From: news@example.test\r\nSender: x@other.test\r\n\r\n", "Sender"),
        (b"From: news@example.test\r\nResent-From: x@other.test\r\n\r\n", "Resent-From"),
        (b"Resent-Sender: x@other.test\r\n\r\n", "Resent-Sender"),
        (b"From: news@example.test, ceo@other.test\r\n\r\n", "From"),
        (b"From: news@example.test\r\nFROM : ceo@other.test\r\n\r\n", "From"),
        (b"From: <news@example.test\r\n\r\n", "From"),  # unreadable: refused
        (b"From: root (Cron Daemon)\r\n\r\n", None),  # claims no domain
        (b"Subject: no author at all\r\n\r\n", None),
    ],
)
def test_author_verdict_names_the_first_field_not_allowed(head: bytes, field: str | None) -> None:
    refusal = author_verdict(LIMITED, read_authors(head))
    if field is None:
        assert refusal is None
        return
    assert isinstance(refusal, SenderRefusal)
    assert (refusal.code, refusal.enhanced, refusal.field) == (553, "5.7.1", field)
    assert refusal.lines[0].startswith(field)


def test_any_sender_and_no_principal_skip_the_author_check() -> None:
    unreadable = read_authors(b"From: <broken\r\n\r\n")
    assert author_verdict(USER, unreadable) is None
    assert author_verdict(None, unreadable) is None


def test_a_header_too_long_to_read_whole_is_refused() -> None:
    authors = read_authors(b"From: news@example.test\r\nX: " + b"y" * 100, complete=False)
    refusal = author_verdict(LIMITED, authors)
    assert refusal is not None and refusal.field == "header"


def test_default_rights_of_each_principal(tmp_path: Path) -> None:
    user = UserRecord("app@example.test", "h", ("other.test",), 0.0)
    assert user_rights(user) == SenderRights(frozenset({"example.test", "other.test"}))
    assert user_rights(UserRecord("a@b.test", "h", (), 0.0, any_sender=True)).any_domain
    key = ApiKeyRecord("k", "id", "h", (), 0.0)
    assert api_key_rights(key) == SenderRights(local_domains=True)
    settings = Settings.model_validate(
        {
            "hostname": "Mail.Example.TEST",
            "data_dir": tmp_path,
            "senders": {"sendmail": {"sender_domains": ["Bücher.test"]}},
        }
    )
    local = local_principal("alice", settings)
    assert local.kind is PrincipalKind.LOCAL
    assert local.rights == SenderRights(
        frozenset({"mail.example.test", "xn--bcher-kva.test"}), local_domains=True
    )


def test_rights_are_described_for_the_lists() -> None:
    assert ANY_SENDER.describe() == "any domain"
    assert SenderRights(frozenset({"b.test", "a.test"})).describe() == "a.test, b.test"
    assert SenderRights(frozenset({"p.test"}), local_domains=True).describe() == (
        "local domains, p.test"
    )


@pytest.mark.parametrize(
    ("client", "network"),
    [
        ("192.168.1.20", "192.168.1.0/24"),
        ("::ffff:192.168.1.20", "192.168.1.0/24"),  # a dual-stack socket's IPv4 client
        ("fd00::5", "fd00::/8"),
        ("192.168.2.1", None),
        ("not an address", None),
        (None, None),
    ],
)
def test_relay_networks_give_a_network_principal(client: str | None, network: str | None) -> None:
    settings = Settings.model_validate(
        {
            "relay_networks": ("192.168.1.7/24", "fd00::/8"),
            "senders": {"relay_networks": {"sender_domains": ["printer.test"]}},
        }
    )
    assert settings.relay_networks == ("192.168.1.0/24", "fd00::/8")
    principal = RelayNetworks.from_settings(settings).principal(client)
    if network is None:
        assert principal is None
        return
    assert principal is not None
    assert (principal.name, principal.kind) == (network, PrincipalKind.NETWORK)
    assert principal.rights == SenderRights(frozenset({"printer.test"}), local_domains=True)


def test_no_relay_networks_no_network_principal() -> None:
    assert RelayNetworks.from_settings(Settings()).principal("127.0.0.1") is None

from __future__ import annotations

import pytest

from postroom.intake.policy import Principal, recipient_verdict, sender_verdict
from postroom.mail.address import parse_address

USER = Principal("app@example.test")
LIMITED = Principal("news@example.test", sender_domains=("example.test", "xn--bcher-kva.test"))


@pytest.mark.parametrize(
    ("recipient", "principal", "local", "exists", "expected"),
    [
        ("app@example.test", None, True, True, None),
        ("ghost@example.test", None, True, False, (550, "5.1.1")),
        ("ghost@example.test", USER, True, False, (550, "5.1.1")),
        ("POSTMASTER@example.test", None, True, False, None),
        ("friend@far.test", None, False, False, (550, "5.7.1")),
        ("friend@far.test", USER, False, False, None),
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
    ("sender", "principal", "allowed"),
    [
        ("anyone@anywhere.test", None, True),
        ("anyone@anywhere.test", USER, True),
        ("news@example.test", LIMITED, True),
        ("news@bücher.test", LIMITED, True),
        ("news@other.test", LIMITED, False),
    ],
)
def test_sender_verdict(sender: str, principal: Principal | None, allowed: bool) -> None:
    reply = sender_verdict(principal, parse_address(sender))
    if allowed:
        assert reply is None
    else:
        assert reply is not None and (reply.code, reply.enhanced) == (553, "5.7.1")


def test_null_sender_is_allowed_for_limited_principal() -> None:
    assert sender_verdict(LIMITED, None) is None

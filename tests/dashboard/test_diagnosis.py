"""A failed attempt in plain language: the cause an operator would name, from the reply."""

from __future__ import annotations

import pytest

from postroom.dashboard.diagnosis import diagnose
from postroom.store.models import Attempt


def _attempt(disposition: str, code: int | None, enhanced: str | None, text: str) -> Attempt:
    return Attempt("Q", "to@example.net", 0.0, "relay", disposition, code, enhanced, text)


@pytest.mark.parametrize(
    ("code", "enhanced", "text", "cause"),
    [
        (535, "5.7.8", "Authentication credentials invalid", "username or password"),
        (401, None, "Unauthorized: invalid API key", "API key"),
        (None, None, "connection refused by 192.0.2.1:25", "could not reach"),
        (None, None, "timed out connecting to mx.example.net", "could not reach"),
        (None, None, "no MX or A record for example.invalid (NXDOMAIN)", "no mail server in DNS"),
        (550, "5.7.23", "SPF validation failed", "SPF"),
        (550, "5.7.26", "Unauthenticated email is not accepted (DMARC)", "DKIM or DMARC"),
        (None, None, "TLS handshake failed: certificate verify failed", "TLS"),
        (550, "5.1.1", "user unknown", "does not exist"),
        (552, "5.2.2", "mailbox full", "full"),
        (554, "5.7.1", "Service unavailable; client host blocked using Spamhaus", "reputation"),
    ],
)
def test_a_failure_is_named_by_its_likely_cause(
    code: int | None, enhanced: str | None, text: str, cause: str
) -> None:
    found = diagnose(_attempt("bounced", code, enhanced, text))
    assert found is not None
    assert cause in found.what


def test_a_delivery_needs_no_diagnosis_and_an_unknown_reply_is_quoted() -> None:
    assert diagnose(_attempt("delivered", 250, "2.0.0", "Ok")) is None
    found = diagnose(_attempt("deferred", 451, "4.3.0", "try again, said the gremlin"))
    assert found is not None
    assert "gremlin" in found.what and "try again" in found.change

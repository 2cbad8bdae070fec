"""A failed attempt in plain language: what most likely happened and what to change.

The classification reads the reply code, enhanced status code and text the mailer
recorded (``Attempt``), never a mailer's internals. The table is ordered: the first
rule that matches speaks. Anything unrecognised gets the server's own words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from postroom.store.models import Attempt

__all__ = ["Diagnosis", "diagnose"]


@dataclass(frozen=True, slots=True)
class Diagnosis:
    what: str  # what happened
    change: str  # what to change


def _text(attempt: Attempt) -> str:
    return f"{attempt.code or ''} {attempt.enhanced or ''} {attempt.text}".lower()


_RULES: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (
        re.compile(r"\b535\b|5\.7\.8|authentication (failed|credentials)|username and password"),
        "The relay refused the username or password.",
        "Check the mailer's username and password (an app password where the provider"
        " asks for one), then retry.",
    ),
    (
        re.compile(
            r"\b(401|403)\b.*\b(key|token|unauthori[sz]ed|forbidden)|invalid api key|"
            r"api key (is )?(invalid|not valid)|unauthori[sz]ed"
        ),
        "The provider refused the API key.",
        "Check the mailer's API key (and its region or account), and that it may send.",
    ),
    (
        re.compile(
            r"connection refused|timed out|timeout|network is unreachable|"
            r"no route to host|cannot connect|could not connect"
        ),
        "postroom could not reach the receiving server on its port.",
        "Outgoing port 25 is often blocked by hosting providers: ask them to open it, or"
        " send through a relay on port 587 or 465 (a relay mailer and a route to it).",
    ),
    (
        re.compile(
            r"nxdomain|no mx|no such domain|domain (does not|doesn't) exist|"
            r"dns|host not found|name or service not known|5\.1\.2|4\.4\.3"
        ),
        "The recipient's domain has no mail server in DNS, or DNS did not answer.",
        "Check the address's domain for typos; if it is yours, publish its MX record;"
        " if DNS is failing here, check dns.nameservers.",
    ),
    (
        re.compile(r"\bspf\b|5\.7\.23|sender policy"),
        "The receiving server checked SPF for the sender's domain and it failed.",
        "Publish an SPF record that includes this server's address: `postroom domain"
        " check DOMAIN` prints the record to publish.",
    ),
    (
        re.compile(r"dkim|dmarc|5\.7\.2[5-9]|5\.7\.1\b.*(authenticat|policy)"),
        "The receiving server refused the message for failed DKIM or DMARC checks.",
        "Make a DKIM key for the sender's domain and publish its record, and check the"
        " domain's DMARC policy (`postroom domain check DOMAIN`).",
    ),
    (
        re.compile(r"certificate|tls|ssl|handshake"),
        "The TLS connection to the receiving server failed.",
        "Check the mailer's TLS settings (the host name must match its certificate).",
    ),
    (
        re.compile(r"5\.1\.1|user unknown|no such user|mailbox unavailable|does not exist"),
        "The receiving server says the recipient address does not exist.",
        "Check the address for typos.",
    ),
    (
        re.compile(r"5\.2\.2|mailbox full|quota"),
        "The recipient's mailbox is full.",
        "Nothing to change here: the recipient has to make room; postroom retries a 4xx.",
    ),
    (
        re.compile(r"\b(blocked|blacklist|blocklist|spamhaus|reputation|5\.7\.1)\b"),
        "The receiving server refused mail from this server (policy or reputation).",
        "Check this server's address on public block lists and its reverse DNS (PTR);"
        " send through a relay with a good reputation meanwhile.",
    ),
)


def diagnose(attempt: Attempt) -> Diagnosis | None:
    """None for a delivery; otherwise the most likely cause and the change to make."""
    if attempt.disposition == "delivered":
        return None
    text = _text(attempt)
    for pattern, what, change in _RULES:
        if pattern.search(text):
            return Diagnosis(what, change)
    later = "postroom will try again" if attempt.disposition == "deferred" else "it bounced"
    return Diagnosis(
        f"The server answered: {attempt.code or ''} {attempt.text}".strip(),
        f"No known cause; {later}. The full reply is in the message's timeline.",
    )

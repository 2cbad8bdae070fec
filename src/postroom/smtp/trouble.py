"""What goes wrong in an outbound SMTP session, and the one table that says what it means.

Every failure is a ``Failure``: the ``Stage`` the session was at and its ``Fault``.
``CLASSIFICATION`` maps (stage, fault) to a ``Rule``, as Postfix's smtp_trouble.c does:
bounce or defer; the one recipient a RCPT reply was about or all that are left; whether
another mailer may do better (``failover``); whether the next MX host or address may
(``next_host``); and our own reply when the remote's words are not the point.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from postroom.smtp.replies import Reply

__all__ = [
    "CLASSIFICATION",
    "SESSION_INTACT",
    "Failure",
    "Fault",
    "Rule",
    "Scope",
    "Stage",
    "classify",
    "reply_failure",
]


class Stage(StrEnum):
    """Where a transaction was; the values complete "... while <stage>"."""

    CONNECT = "connecting"
    GREETING = "receiving the initial server greeting"
    HELO = "sending EHLO/HELO"
    STARTTLS = "starting TLS"
    AUTH = "authenticating"
    MAIL = "sending MAIL FROM"
    RCPT = "sending RCPT TO"
    DATA = "sending message content"


class Fault(StrEnum):
    TRANSIENT = "4xx reply"
    PERMANENT = "5xx reply"
    CLOSING = "421 reply"  # RFC 5321 3.8: the server is ending the session, whatever we sent
    NO_CONNECTION = "no connection"  # refused, unreachable
    TIMEOUT = "timeout"
    LOST = "lost connection"
    TLS = "TLS failure"  # handshake or certificate failure, or required TLS not offered
    LOCAL = "local refusal"  # we will not send it there: SIZE, SMTPUTF8, address syntax


class Scope(StrEnum):
    RECIPIENT = "recipient"  # the one recipient the reply was about
    ALL = "all"  # every recipient not settled yet


@dataclass(frozen=True, slots=True)
class Rule:
    bounce: bool  # permanent: bounce; else defer
    scope: Scope
    failover: bool  # another mailer in the chain could succeed
    next_host: bool  # mx: another address or MX host could succeed
    ours: tuple[int, str] | None = None  # (code, enhanced) of our own reply; None: the remote's


_BOUNCE, _DEFER = True, False
ONE, ALL = Scope.RECIPIENT, Scope.ALL
# (stage, fault) first, then (None, fault) for any stage. Columns: bounce, scope,
# failover, next_host, our own (code, enhanced) or None for the remote's reply.
CLASSIFICATION: Final[Mapping[tuple[Stage | None, Fault], Rule]] = MappingProxyType(
    {
        (Stage.RCPT, Fault.PERMANENT): Rule(_BOUNCE, ONE, False, False),
        (Stage.RCPT, Fault.TRANSIENT): Rule(_DEFER, ONE, True, False),
        (Stage.MAIL, Fault.PERMANENT): Rule(_BOUNCE, ALL, False, False),
        (Stage.DATA, Fault.PERMANENT): Rule(_BOUNCE, ALL, False, False),
        # A 5xx greeting or EHLO says "not from you", not "no such mailbox": skip the host
        # (Postfix smtp_skip_5xx_greeting) and defer when it was the last one.
        (Stage.GREETING, Fault.PERMANENT): Rule(_DEFER, ALL, True, True, (451, "4.4.0")),
        (Stage.HELO, Fault.PERMANENT): Rule(_DEFER, ALL, True, True, (451, "4.4.0")),
        # A refused login at a relay is the operator's problem: defer, never bounce.
        (Stage.AUTH, Fault.PERMANENT): Rule(_DEFER, ALL, True, True, (454, "4.7.0")),
        (Stage.CONNECT, Fault.TIMEOUT): Rule(_DEFER, ALL, True, True, (451, "4.4.1")),
        (None, Fault.PERMANENT): Rule(_BOUNCE, ALL, False, False),
        (None, Fault.TRANSIENT): Rule(_DEFER, ALL, True, True),
        # A 421 ends the session at any stage, RCPT included: every recipient left waits
        # for another host or a later try, the remote's words kept.
        (None, Fault.CLOSING): Rule(_DEFER, ALL, True, True),
        (None, Fault.NO_CONNECTION): Rule(_DEFER, ALL, True, True, (451, "4.4.1")),
        (None, Fault.TIMEOUT): Rule(_DEFER, ALL, True, True, (451, "4.4.2")),
        (None, Fault.LOST): Rule(_DEFER, ALL, True, True, (451, "4.4.2")),
        (None, Fault.TLS): Rule(_DEFER, ALL, True, True, (454, "4.7.5")),
        (None, Fault.LOCAL): Rule(_BOUNCE, ALL, False, False),
    }
)

# After these the session can carry another transaction (after RSET).
SESSION_INTACT: Final = frozenset({Fault.TRANSIENT, Fault.PERMANENT, Fault.LOCAL})


def classify(stage: Stage, fault: Fault) -> Rule:
    return CLASSIFICATION.get((stage, fault)) or CLASSIFICATION[(None, fault)]


class Failure(Exception):
    """A failure at ``stage``; ``remote`` is the peer's reply when there was one."""

    def __init__(self, stage: Stage, fault: Fault, text: str, remote: Reply | None = None):
        super().__init__(text)
        self.stage, self.fault, self.text, self.remote = stage, fault, text, remote

    def _key(self) -> tuple[object, ...]:
        return (self.stage, self.fault, self.text, self.remote)

    def __eq__(self, other: object) -> bool:  # a value, carried in events
        return isinstance(other, Failure) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def rule(self) -> Rule:
        return classify(self.stage, self.fault)

    @property
    def reply(self) -> Reply:
        """What the recipients' outcomes carry: the remote's reply, or ours with the text."""
        rule = self.rule
        if rule.ours is None and self.remote is not None:
            return self.remote
        code, enhanced = rule.ours or (451, "4.4.0")
        return Reply(code, enhanced, self.text)


def reply_failure(stage: Stage, reply: Reply, where: str) -> Failure:
    """A reply that was not the one hoped for."""
    if reply.code == 421:
        return Failure(stage, Fault.CLOSING, f"{where} said: {reply}", reply)
    if reply.is_transient:
        return Failure(stage, Fault.TRANSIENT, f"{where} said: {reply}", reply)
    if reply.is_permanent:
        return Failure(stage, Fault.PERMANENT, f"{where} said: {reply}", reply)
    # RFC 5321 4.2.1: anything else here is a protocol error; try again later.
    text = f"protocol error: unexpected reply from {where} while {stage}: {reply}"
    return Failure(stage, Fault.TRANSIENT, text, Reply(451, "4.5.0", text))

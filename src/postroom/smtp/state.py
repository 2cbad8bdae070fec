"""The SMTP transaction state table (RFC 5321 4.1.4, RFC 3030 2), as data.

Two tables, read by ``ServerConnection`` and by the tests:

- ``ACCEPTS``: the states in which each command may be given. Outside them the command
  is refused with ``REFUSALS[(verb, state)]`` when there is a more helpful reply than
  ``503 5.5.1 Bad sequence of commands``.
- ``ON_SUCCESS``: the state a positive (2xx/3xx) reply to a command leads to. A negative
  reply leaves the state as it was, except where ``ON_FAILURE`` says otherwise.

Modes that are not transaction states (reading DATA or a BDAT chunk, an AUTH exchange,
waiting for the TLS handshake) belong to the connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Final

from postroom.smtp import replies
from postroom.smtp.replies import Reply

__all__ = [
    "ACCEPTS",
    "ANY",
    "ON_FAILURE",
    "ON_SUCCESS",
    "REFUSALS",
    "TRANSACTION",
    "State",
    "after",
    "refusal",
]


class State(Enum):
    INITIAL = "initial"  # before HELO/EHLO, and again after STARTTLS (RFC 3207 4.2)
    READY = "ready"  # greeted; no transaction
    MAIL = "mail"  # MAIL accepted, no recipient yet
    RCPT = "rcpt"  # at least one recipient accepted
    BDAT = "bdat"  # at least one non-LAST BDAT chunk accepted (RFC 3030)
    BDAT_FAILED = "bdat_failed"  # a BDAT chunk was refused: only RSET helps (RFC 3030 2)

    # Members are singletons compared by identity, so their identity is their hash:
    # Enum's own hashes the name in Python, and the tables are read several times a
    # command.
    __hash__ = object.__hash__


ANY: Final = frozenset(State)
TRANSACTION: Final = frozenset({State.MAIL, State.RCPT, State.BDAT, State.BDAT_FAILED})
_IDLE: Final = frozenset({State.INITIAL, State.READY})

# Commands that are not listed here (NOOP, RSET, QUIT, VRFY, HELP, EXPN, ...) are accepted
# in every state (RFC 5321 4.1.4: "may be issued at any time").
ACCEPTS: Final[Mapping[str, frozenset[State]]] = {
    "HELO": ANY,
    "EHLO": ANY,
    "MAIL": frozenset({State.READY}),
    "RCPT": frozenset({State.MAIL, State.RCPT}),
    "DATA": frozenset({State.RCPT}),
    "BDAT": frozenset({State.RCPT, State.BDAT}),
    # RFC 3207 4: not in a transaction. RFC 4954 4: AUTH after EHLO, not in a transaction.
    "STARTTLS": _IDLE,
    "AUTH": frozenset({State.READY}),
}

REFUSALS: Final[Mapping[tuple[str, State], Reply]] = {
    ("MAIL", State.INITIAL): replies.NEED_HELO,
    ("AUTH", State.INITIAL): replies.NEED_HELO,
    ("RCPT", State.INITIAL): replies.NEED_MAIL,
    ("RCPT", State.READY): replies.NEED_MAIL,
    ("DATA", State.INITIAL): replies.NEED_MAIL,
    ("DATA", State.READY): replies.NEED_MAIL,
    ("BDAT", State.INITIAL): replies.NEED_MAIL,
    ("BDAT", State.READY): replies.NEED_MAIL,
    **{("MAIL", state): replies.NESTED_MAIL for state in TRANSACTION},
    # RFC 5321 3.3: DATA with no accepted recipient may get 503 or 554; 554 says why.
    ("DATA", State.MAIL): replies.NO_VALID_RECIPIENTS,
    ("BDAT", State.MAIL): replies.NO_VALID_RECIPIENTS,
}

ON_SUCCESS: Final[Mapping[str, State]] = {
    "HELO": State.READY,  # RFC 5321 4.1.4: HELO/EHLO also reset any transaction
    "EHLO": State.READY,
    "MAIL": State.MAIL,
    "RCPT": State.RCPT,
    "BDAT": State.BDAT,  # a non-LAST chunk
    "MESSAGE_END": State.READY,
}

# RFC 3030 2: after a refused chunk the transaction has failed, and further BDAT chunks
# already in the pipeline are read and refused until RSET. The end of a message (the
# reply to its data) ends the transaction whatever the reply was.
ON_FAILURE: Final[Mapping[str, State]] = {
    "BDAT": State.BDAT_FAILED,
    "MESSAGE_END": State.READY,
}


def refusal(state: State, verb: str) -> Reply | None:
    """None when ``verb`` may be given in ``state``, else the reply that refuses it."""
    allowed = ACCEPTS.get(verb, ANY)
    if state in allowed:
        return None
    return REFUSALS.get((verb, state), replies.BAD_SEQUENCE)


def after(state: State, verb: str, reply: Reply) -> State:
    """The state after ``reply`` answered ``verb`` in ``state``."""
    if verb == "RSET" and reply.is_positive:
        # RFC 5321 4.1.1.5: RSET ends the transaction but is not a greeting.
        return State.INITIAL if state is State.INITIAL else State.READY
    table = ON_SUCCESS if reply.is_positive else ON_FAILURE
    return table.get(verb, state)

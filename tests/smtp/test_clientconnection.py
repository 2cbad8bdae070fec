"""ClientConnection: what the client sends and concludes, from the server's side of real
transcripts, without sockets or a loop.

Each transcript is a list of turns: what the server writes, then what the client must
have written in answer before the server's next turn. Every turn is fed whole and then one
byte at a time; what the client writes and the events it reports must be the same.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest

from postroom.smtp.client import message_data
from postroom.smtp.clientconnection import (
    ClientConfig,
    ClientConnection,
    ClientEvent,
    Closed,
    Failed,
    MessageDone,
    Ready,
    RecipientRefused,
    Stale,
    StartTls,
    TlsMode,
)
from postroom.smtp.events import NEED_DATA
from postroom.smtp.replies import Reply
from postroom.smtp.trouble import Failure, Fault, Scope, Stage

WHERE = "mx.example.test[192.0.2.1]:25"
CONFIG = ClientConfig("client.test", WHERE)
GREETING = b"220 mx.example.test ESMTP\r\n"
EHLO = b"EHLO client.test\r\n"
CAPABILITIES = (
    b"250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n"
    b"250-DSN\r\n250 ENHANCEDSTATUSCODES\r\n"
)
LOCKSTEP_CAPABILITIES = b"250-mx.example.test\r\n250 SIZE 1000000\r\n"
BODY = b"From: a@example.org\r\nSubject: hi\r\n\r\n.a line with a dot\r\nbody\r\n"
STUFFED = b"From: a@example.org\r\nSubject: hi\r\n\r\n..a line with a dot\r\nbody\r\n.\r\n"
OK = b"250 2.1.0 Ok\r\n"
QUEUED = b"250 2.0.0 Ok: queued as 4AB1\r\n"
CHUNKING_CAPABILITIES = (
    b"250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250-CHUNKING\r\n"
    b"250 ENHANCEDSTATUSCODES\r\n"
)
LOCKSTEP_CHUNKING = b"250-mx.example.test\r\n250-CHUNKING\r\n250 SIZE 1000000\r\n"
MAIL = f"MAIL FROM:<a@example.org> SIZE={len(BODY)}\r\n".encode()
# The message as it is: no dot-stuffing, no final dot.
CHUNK = f"BDAT {len(BODY)} LAST\r\n".encode() + BODY


@dataclass(frozen=True, slots=True)
class Msg:
    sender: str = "a@example.org"
    data: bytes = BODY
    smtputf8: bool = False
    body_type: str = "7BIT"
    ret: str | None = None
    envid: str | None = None


@dataclass(frozen=True, slots=True)
class Rcpt:
    address: str
    notify: str | None = None
    orcpt: str | None = None


ALICE, BOB, CAROL = Rcpt("alice@example.test"), Rcpt("bob@example.test"), Rcpt("carol@x.test")
Send = tuple[Msg, Sequence[Rcpt]]


@dataclass
class Conversation:
    """A driver as thin as the real one: it reacts to events and moves bytes."""

    config: ClientConfig = CONFIG
    messages: list[Send] = field(default_factory=list)
    quit: bool = True  # QUIT when no message is left
    conn: ClientConnection = field(init=False)
    events: list[ClientEvent] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)  # one entry per server turn

    def __post_init__(self) -> None:
        self.conn = ClientConnection(self.config)
        self._queue: deque[Send] = deque(self.messages)

    def turn(self, data: bytes, bytewise: bool) -> bytes:
        written = []
        for piece in pieces(data, bytewise):
            self.conn.receive_data(piece)
            written.append(self.pump())
        out = b"".join(written)
        self.sent.append(out)
        return out

    def pump(self) -> bytes:
        conn, written = self.conn, []
        while (event := conn.next_event()) is not NEED_DATA:
            if isinstance(event, Closed):  # said again each time it is asked
                if self.events[-1:] != [event]:
                    self.events.append(event)
                break
            self.events.append(event)
            if isinstance(event, StartTls):
                conn.tls_started()
            elif isinstance(event, Ready | MessageDone | Failed | Stale) and conn.usable:
                if self._queue:
                    conn.send_message(*self._queue.popleft())
                elif self.quit:
                    conn.quit()
            written.append(conn.data_to_send())
        written.append(conn.data_to_send())
        return b"".join(written)


def pieces(data: bytes, bytewise: bool) -> Iterator[bytes]:
    if bytewise:
        yield from (data[i : i + 1] for i in range(len(data)))
    else:
        yield data


@pytest.fixture(params=["whole", "bytewise"])
def bytewise(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "bytewise")


def converse(
    turns: Sequence[tuple[bytes, bytes]],
    bytewise: bool,
    *,
    config: ClientConfig = CONFIG,
    messages: Sequence[Send] = (),
    quit: bool = True,
) -> Conversation:
    """Play the server's turns; each must be answered by exactly the bytes given."""
    conversation = Conversation(config, list(messages), quit)
    for server, client in turns:
        assert conversation.turn(server, bytewise) == client, server
    return conversation


def failed(conversation: Conversation) -> Failure:
    """The one failure reported (a closed session then says ``Closed``)."""
    found = [event.failure for event in conversation.events if isinstance(event, Failed)]
    assert len(found) == 1, conversation.events
    return found[0]


def reply(code: int, enhanced: str | None, text: str | tuple[str, ...]) -> Reply:
    return Reply(code, enhanced, text)


# -- whole sessions -----------------------------------------------------------------------------
def test_a_pipelined_message_with_every_parameter(bytewise: bool) -> None:
    message = Msg(body_type="8BITMIME", ret="hdrs", envid="Q1+x")
    bob = Rcpt("bob@example.test", notify="success, failure", orcpt="rfc822;bob@example.test")
    size = len(BODY)
    conversation = converse(
        [
            (GREETING, EHLO),
            (
                CAPABILITIES,
                f"MAIL FROM:<a@example.org> SIZE={size} BODY=8BITMIME RET=HDRS ENVID=Q1+2Bx\r\n"
                "RCPT TO:<alice@example.test>\r\n"
                "RCPT TO:<bob@example.test> NOTIFY=SUCCESS,FAILURE"
                " ORCPT=rfc822;bob@example.test\r\n"
                "DATA\r\n".encode(),
            ),
            (OK + OK + b"250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n", STUFFED),
            (QUEUED, b"QUIT\r\n"),
            (b"221 2.0.0 Bye\r\n", b""),
        ],
        bytewise,
        messages=[(message, [ALICE, bob])],
    )
    ready, done, closed = conversation.events
    assert isinstance(ready, Ready) and ready.capabilities.pipelining
    assert ready.capabilities.size == 1000000
    assert done == MessageDone((0, 1), reply(250, "2.0.0", "Ok: queued as 4AB1"))
    assert closed == Closed() and conversation.conn.closed


@pytest.mark.parametrize(
    ("capabilities", "content"),
    [
        (
            LOCKSTEP_CAPABILITIES,
            [(b"250 2.1.5 Ok\r\n", b"DATA\r\n"), (b"354 Go ahead\r\n", STUFFED)],
        ),
        # RFC 3030: BDAT after the last RCPT reply, the message as it is.
        (LOCKSTEP_CHUNKING, [(b"250 2.1.5 Ok\r\n", CHUNK)]),
    ],
    ids=["data", "bdat"],
)
def test_without_pipelining_one_command_per_reply(
    bytewise: bool, capabilities: bytes, content: list[tuple[bytes, bytes]]
) -> None:
    conversation = converse(
        [
            (GREETING, EHLO),
            (capabilities, f"MAIL FROM:<a@example.org> SIZE={len(BODY)}\r\n".encode()),
            (OK, b"RCPT TO:<alice@example.test>\r\n"),
            (b"550 5.1.1 No such user\r\n", b"RCPT TO:<bob@example.test>\r\n"),
            *content,
            (QUEUED, b""),
        ],
        bytewise,
        messages=[(Msg(), [ALICE, BOB])],
        quit=False,
    )
    _, refused, done = conversation.events
    assert isinstance(refused, RecipientRefused) and refused.index == 0
    assert refused.failure.remote == reply(550, "5.1.1", "No such user")
    assert refused.failure.rule.bounce and refused.failure.rule.scope is Scope.RECIPIENT
    assert done == MessageDone((1,), reply(250, "2.0.0", "Ok: queued as 4AB1"))
    assert conversation.conn.usable


def test_multiline_replies_keep_every_line(bytewise: bool) -> None:
    conversation = converse(
        [
            (b"220-mx.example.test ESMTP\r\n220-no UCE\r\n220 welcome\r\n", EHLO),
            (CAPABILITIES, b"QUIT\r\n"),
        ],
        bytewise,
    )
    ready = conversation.events[0]
    assert isinstance(ready, Ready)
    assert set(ready.capabilities.extensions) == {
        "pipelining",
        "size",
        "8bitmime",
        "dsn",
        "enhancedstatuscodes",
    }


def test_a_second_message_starts_with_rset_in_the_same_batch(bytewise: bool) -> None:
    mail = f"MAIL FROM:<a@example.org> SIZE={len(BODY)}\r\n".encode()
    batch = mail + b"RCPT TO:<alice@example.test>\r\nDATA\r\n"
    converse(
        [
            (GREETING, EHLO),
            (CAPABILITIES, batch),
            (OK + OK + b"354 Go\r\n", STUFFED),
            (QUEUED, b"RSET\r\n" + batch),
            (OK + OK + OK + b"354 Go\r\n", STUFFED),
            (QUEUED, b"QUIT\r\n"),
        ],
        bytewise,
        messages=[(Msg(), [ALICE]), (Msg(), [ALICE])],
    )


# -- EHLO, STARTTLS, AUTH -------------------------------------------------------------------------
def test_helo_when_ehlo_is_unknown(bytewise: bool) -> None:
    conversation = converse(
        [
            (GREETING, EHLO),
            (b"502 5.5.2 Command not recognized\r\n", b"HELO client.test\r\n"),
            (b"250 mx.example.test\r\n", b"MAIL FROM:<a@example.org>\r\n"),
        ],
        bytewise,
        messages=[(Msg(), [ALICE])],
    )
    ready = conversation.events[0]
    assert isinstance(ready, Ready) and not ready.capabilities.esmtp


def test_starttls_then_ehlo_again_then_auth_plain(bytewise: bool) -> None:
    config = ClientConfig(
        "client.test", WHERE, TlsMode.STARTTLS, username="user", password="secret"
    )
    conversation = converse(
        [
            (GREETING, EHLO),
            (b"250-mx.example.test\r\n250 STARTTLS\r\n", b"STARTTLS\r\n"),
            (b"220 2.0.0 Ready to start TLS\r\n", EHLO),
            (
                b"250-mx.example.test\r\n250 AUTH LOGIN PLAIN\r\n",
                b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n",
            ),
            (b"235 2.7.0 Authentication successful\r\n", b"QUIT\r\n"),
        ],
        bytewise,
        config=config,
    )
    tls, ready = conversation.events[:2]
    assert tls == StartTls() and isinstance(ready, Ready)
    assert "starttls" not in ready.capabilities.extensions  # the answer after TLS counts
    assert conversation.conn.tls and conversation.conn.authenticated


def test_auth_login_when_plain_is_not_offered(bytewise: bool) -> None:
    config = ClientConfig("client.test", WHERE, username="user", password="secret")
    converse(
        [
            (GREETING, EHLO),
            (b"250-mx.example.test\r\n250 AUTH=LOGIN\r\n", b"AUTH LOGIN\r\n"),
            (b"334 VXNlcm5hbWU6\r\n", b"dXNlcg==\r\n"),
            (b"334 UGFzc3dvcmQ6\r\n", b"c2VjcmV0\r\n"),
            (b"235 2.7.0 Ok\r\n", b"QUIT\r\n"),
        ],
        bytewise,
        config=config,
    )


def test_a_refused_login_defers_and_closes(bytewise: bool) -> None:
    config = ClientConfig("client.test", WHERE, username="user", password="wrong")
    conversation = converse(
        [
            (GREETING, EHLO),
            (b"250-mx.example.test\r\n250 AUTH PLAIN\r\n", b"AUTH PLAIN AHVzZXIAd3Jvbmc=\r\n"),
            (b"535 5.7.8 Authentication credentials invalid\r\n", b""),
        ],
        bytewise,
        config=config,
    )
    failure = failed(conversation)
    assert (failure.stage, failure.fault) == (Stage.AUTH, Fault.PERMANENT)
    assert not failure.rule.bounce and failure.rule.next_host  # the operator's problem
    assert failure.reply.code == 454 and failure.reply.enhanced == "4.7.0"
    assert "535 5.7.8" in failure.text
    assert conversation.conn.closed


def test_no_common_auth_mechanism_sends_no_password(bytewise: bool) -> None:
    config = ClientConfig("client.test", WHERE, username="user", password="secret")
    conversation = converse(
        [(GREETING, EHLO), (b"250-mx.example.test\r\n250 AUTH CRAM-MD5\r\n", b"")],
        bytewise,
        config=config,
    )
    assert "no common AUTH mechanism (offered: CRAM-MD5)" in failed(conversation).text


def test_starttls_refused_goes_on_in_the_clear_when_opportunistic(bytewise: bool) -> None:
    config = ClientConfig("client.test", WHERE, TlsMode.OPPORTUNISTIC)
    conversation = converse(
        [
            (GREETING, EHLO),
            (b"250-mx.example.test\r\n250 STARTTLS\r\n", b"STARTTLS\r\n"),
            (b"454 4.7.0 TLS not available due to local problem\r\n", b"QUIT\r\n"),
        ],
        bytewise,
        config=config,
    )
    assert isinstance(conversation.events[0], Ready) and not conversation.conn.tls


def test_starttls_refused_fails_when_required(bytewise: bool) -> None:
    config = ClientConfig("client.test", WHERE, TlsMode.STARTTLS)
    conversation = converse(
        [
            (GREETING, EHLO),
            (b"250-mx.example.test\r\n250 STARTTLS\r\n", b"STARTTLS\r\n"),
            (b"454 4.7.0 TLS not available\r\n", b""),
        ],
        bytewise,
        config=config,
    )
    failure = failed(conversation)
    assert (failure.stage, failure.fault) == (Stage.STARTTLS, Fault.TLS)
    assert failure.reply == Reply(
        454, "4.7.5", f"STARTTLS refused by {WHERE}: 454 4.7.0 TLS not available"
    )


def test_required_tls_not_offered_sends_nothing_more(bytewise: bool) -> None:
    config = ClientConfig("client.test", WHERE, TlsMode.STARTTLS)
    conversation = converse(
        [(GREETING, EHLO), (CAPABILITIES, b"")],
        bytewise,
        config=config,
        messages=[(Msg(), [ALICE])],
    )
    assert failed(conversation).text == f"TLS is required, but was not offered by {WHERE}"


def test_replies_injected_after_the_starttls_220_are_refused(bytewise: bool) -> None:
    config = ClientConfig("client.test", WHERE, TlsMode.OPPORTUNISTIC)
    conversation = converse(
        [
            (GREETING, EHLO),
            (b"250-mx.example.test\r\n250 STARTTLS\r\n", b"STARTTLS\r\n"),
            (b"220 Go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n", b""),
        ],
        bytewise=False,  # in one read: that is the attack
        config=config,
    )
    failure = failed(conversation)
    assert (failure.stage, failure.fault) == (Stage.STARTTLS, Fault.TLS)
    assert "more than its 220 reply" in failure.text


def test_a_failed_handshake_is_a_tls_failure() -> None:
    config = ClientConfig("client.test", WHERE, TlsMode.OPPORTUNISTIC)
    conn = ClientConnection(config)
    for data in (GREETING, b"250-mx.example.test\r\n250 STARTTLS\r\n", b"220 Go ahead\r\n"):
        conn.receive_data(data)
        while (event := conn.next_event()) is not NEED_DATA and not isinstance(event, StartTls):
            pass
    conn.tls_failed("certificate verify failed")
    event = conn.next_event()
    assert isinstance(event, Failed) and event.failure.fault is Fault.TLS
    assert event.failure.text == f"TLS handshake with {WHERE} failed: certificate verify failed"


# -- what replies mean ----------------------------------------------------------------------------
BATCH3 = (
    f"MAIL FROM:<a@example.org> SIZE={len(BODY)}\r\n".encode()
    + b"RCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
    + b"RCPT TO:<carol@x.test>\r\nDATA\r\n"
)
THREE: list[Send] = [(Msg(), [ALICE, BOB, CAROL])]


def test_partial_recipient_acceptance(bytewise: bool) -> None:
    conversation = converse(
        [
            (GREETING, EHLO),
            (CAPABILITIES, BATCH3),
            (
                OK + b"550 5.1.1 No such user\r\n450 4.2.0 Greylisted\r\n250 2.1.5 Ok\r\n"
                b"354 Go\r\n",
                STUFFED,
            ),
            (QUEUED, b""),
        ],
        bytewise,
        messages=THREE,
        quit=False,
    )
    _, alice, bob, done = conversation.events
    assert isinstance(alice, RecipientRefused) and isinstance(bob, RecipientRefused)
    assert (alice.index, alice.failure.fault, alice.failure.rule.bounce) == (
        0,
        Fault.PERMANENT,
        True,
    )
    assert (bob.index, bob.failure.fault) == (1, Fault.TRANSIENT)
    assert bob.failure.rule.failover and not bob.failure.rule.next_host  # greylisting
    assert done == MessageDone((2,), reply(250, "2.0.0", "Ok: queued as 4AB1"))


def test_data_5xx_after_rcpt_ok_bounces_the_message_and_keeps_the_session(
    bytewise: bool,
) -> None:
    conversation = converse(
        [
            (GREETING, EHLO),
            (CAPABILITIES, BATCH3),
            (OK * 4 + b"354 Go\r\n", STUFFED),
            (b"554 5.6.0 Message rejected: spam\r\n", b""),
        ],
        bytewise,
        messages=THREE,
        quit=False,
    )
    failure = failed(conversation)
    assert (failure.stage, failure.fault) == (Stage.DATA, Fault.PERMANENT)
    assert failure.rule.bounce and failure.rule.scope is Scope.ALL
    assert failure.reply == reply(554, "5.6.0", "Message rejected: spam")
    assert conversation.conn.usable


def test_a_421_mid_session_defers_everyone_left_and_closes(bytewise: bool) -> None:
    conversation = converse(
        [
            (GREETING, EHLO),
            (CAPABILITIES, BATCH3),
            # the rest of the batch is never answered: the server has gone
            (OK + b"550 5.1.1 No such user\r\n421 4.3.2 Shutting down\r\n", b""),
        ],
        bytewise,
        messages=THREE,
    )
    _, alice, closing, closed = conversation.events
    assert isinstance(alice, RecipientRefused) and alice.index == 0
    assert isinstance(closing, Failed) and closed == Closed()
    failure = closing.failure
    assert (failure.stage, failure.fault) == (Stage.RCPT, Fault.CLOSING)
    rule = failure.rule
    assert not rule.bounce and rule.scope is Scope.ALL and rule.next_host
    assert failure.reply == reply(421, "4.3.2", "Shutting down")
    assert conversation.conn.closed
    conversation.conn.receive_data(b"250 late\r\n")
    assert conversation.conn.next_event() == Closed()


def test_a_refused_sender_reads_the_rest_of_the_batch_first(bytewise: bool) -> None:
    conversation = converse(
        [
            (GREETING, EHLO),
            (CAPABILITIES, BATCH3),
            # DATA accepted all the same: a single dot ends it (RFC 2920 3.1)
            (
                b"553 5.7.1 Sender rejected\r\n" + b"503 5.5.1 No MAIL\r\n" * 3 + b"354 Go\r\n",
                b".\r\n",
            ),
            (b"554 5.5.1 No valid recipients\r\n", b""),
        ],
        bytewise,
        messages=THREE,
        quit=False,
    )
    (_, event) = conversation.events
    assert isinstance(event, Failed) and event.failure.stage is Stage.MAIL
    assert event.failure.remote == reply(553, "5.7.1", "Sender rejected")
    assert conversation.conn.usable


def test_all_recipients_refused_sends_a_single_dot_when_pipelined(bytewise: bool) -> None:
    refused = b"550 5.1.1 No such user\r\n"
    conversation = converse(
        [
            (GREETING, EHLO),
            (CAPABILITIES, BATCH3),
            (OK + refused * 3 + b"354 Go\r\n", b".\r\n"),
            (b"554 5.5.1 No valid recipients\r\n", b"QUIT\r\n"),
        ],
        bytewise,
        messages=THREE,
    )
    assert conversation.events[-1] == MessageDone((), None)


def test_all_recipients_refused_sends_no_data_without_pipelining(bytewise: bool) -> None:
    converse(
        [
            (GREETING, EHLO),
            (LOCKSTEP_CAPABILITIES, f"MAIL FROM:<a@example.org> SIZE={len(BODY)}\r\n".encode()),
            (OK, b"RCPT TO:<alice@example.test>\r\n"),
            (b"550 5.1.1 No such user\r\n", b"QUIT\r\n"),
        ],
        bytewise,
        messages=[(Msg(), [ALICE])],
    )


def test_a_5xx_greeting_skips_the_host(bytewise: bool) -> None:
    conversation = converse([(b"554 5.7.1 Go away\r\n", b"")], bytewise)
    failure = failed(conversation)
    assert (failure.stage, failure.fault) == (Stage.GREETING, Fault.PERMANENT)
    assert not failure.rule.bounce and failure.rule.next_host
    assert failure.reply.code == 451 and failure.reply.enhanced == "4.4.0"


def test_an_unexpected_reply_is_a_protocol_error(bytewise: bool) -> None:
    conversation = converse([(b"250 hello?\r\n", b"")], bytewise)
    failure = failed(conversation)
    assert failure.fault is Fault.TRANSIENT and failure.reply.enhanced == "4.5.0"
    assert failure.text.startswith("protocol error: unexpected reply from")


# -- the connection going away --------------------------------------------------------------------
def test_lost_while_sending_the_message(bytewise: bool) -> None:
    conversation = converse(
        [(GREETING, EHLO), (CAPABILITIES, BATCH3), (OK * 4 + b"354 Go\r\n", STUFFED)],
        bytewise,
        messages=THREE,
    )
    conversation.conn.receive_data(b"")
    conversation.pump()
    failure = failed(conversation)
    assert (failure.stage, failure.fault) == (Stage.DATA, Fault.LOST)
    assert failure.text == f"lost connection with {WHERE} while sending message content"
    assert failure.reply.code == 451 and failure.reply.enhanced == "4.4.2"


def test_a_timeout_names_the_stage() -> None:
    conversation = converse([(GREETING, EHLO)], bytewise=False)
    conversation.conn.fail(Fault.TIMEOUT)
    conversation.pump()
    failure = failed(conversation)
    assert failure.text == f"conversation with {WHERE} timed out while sending EHLO/HELO"


def test_replies_before_the_close_still_count(bytewise: bool) -> None:
    conversation = converse(
        [(GREETING, EHLO), (CAPABILITIES, BATCH3)], bytewise, messages=THREE, quit=False
    )
    conversation.conn.receive_data(b"550 5.7.1 Sender rejected\r\n")
    conversation.conn.receive_data(b"")
    conversation.pump()
    failure = failed(conversation)
    assert failure.fault is Fault.PERMANENT and failure.stage is Stage.MAIL


def test_bytes_that_are_not_a_reply(bytewise: bool) -> None:
    conversation = converse([(GREETING, EHLO), (b"HTTP/1.1 400 Bad Request\r\n", b"")], bytewise)
    failure = failed(conversation)
    assert failure.fault is Fault.LOST and conversation.conn.closed
    assert failure.text.startswith(f"protocol error: malformed reply from {WHERE} while")


def test_a_reused_session_gone_before_rset_is_answered_is_stale(bytewise: bool) -> None:
    conversation = converse(
        [(GREETING, EHLO), (CAPABILITIES, BATCH3), (OK * 4 + b"354 Go\r\n", STUFFED)],
        bytewise,
        messages=[*THREE, *THREE],
    )
    assert conversation.turn(QUEUED, bytewise) == b"RSET\r\n" + BATCH3
    conversation.conn.receive_data(b"")
    conversation.pump()
    assert conversation.events[-2:] == [Stale(), Closed()]


def test_a_reused_session_that_refuses_rset_is_stale(bytewise: bool) -> None:
    conversation = converse(
        [(GREETING, EHLO), (CAPABILITIES, BATCH3), (OK * 4 + b"354 Go\r\n", STUFFED)],
        bytewise,
        messages=[*THREE, *THREE],
    )
    conversation.turn(QUEUED, bytewise)
    conversation.turn(b"421 4.4.2 Idle for too long\r\n", bytewise)
    assert conversation.events[-2:] == [Stale(), Closed()]
    assert conversation.conn.closed


def test_an_idle_session_closed_by_the_peer_is_no_longer_usable() -> None:
    conversation = converse([(GREETING, EHLO), (CAPABILITIES, b"")], False, quit=False)
    assert conversation.conn.usable
    conversation.conn.receive_data(b"")
    assert conversation.conn.next_event() == Closed()
    assert not conversation.conn.usable


# -- refused here, before anything is sent ---------------------------------------------------
def test_a_message_over_the_peers_size_is_refused_locally() -> None:
    conversation = converse(
        [(GREETING, EHLO), (b"250-mx.example.test\r\n250 SIZE 10\r\n", b"")],
        False,
        messages=[(Msg(), [ALICE])],
        quit=False,
    )
    failure = failed(conversation)
    assert (failure.stage, failure.fault) == (Stage.MAIL, Fault.LOCAL)
    assert failure.reply.code == 552 and failure.reply.enhanced == "5.3.4"
    assert conversation.conn.usable


def test_smtputf8_needed_but_not_offered() -> None:
    conversation = converse(
        [(GREETING, EHLO), (CAPABILITIES, b"")],
        False,
        messages=[(Msg(smtputf8=True), [ALICE])],
        quit=False,
    )
    assert failed(conversation).reply.enhanced == "5.6.7"


def test_a_bad_recipient_address_is_refused_and_the_rest_go_on(bytewise: bool) -> None:
    mail = f"MAIL FROM:<a@example.org> SIZE={len(BODY)}\r\n".encode()
    conversation = converse(
        [
            (GREETING, EHLO),
            (CAPABILITIES, mail + b"RCPT TO:<bob@example.test>\r\nDATA\r\n"),
            (OK + OK + b"354 Go\r\n", STUFFED),
            (QUEUED, b""),
        ],
        bytewise,
        messages=[(Msg(), [Rcpt("evil@example.test>\r\nDATA"), BOB])],
        quit=False,
    )
    _, refused, done = conversation.events
    assert isinstance(refused, RecipientRefused) and refused.index == 0
    assert refused.failure.reply == reply(553, "5.1.3", "Bad recipient address syntax")
    assert isinstance(done, MessageDone) and done.delivered == (1,)


def test_the_message_is_stuffed_in_one_piece() -> None:
    assert message_data(BODY) == STUFFED


# -- BDAT (RFC 3030 CHUNKING) ---------------------------------------------------------------------


def test_bdat_follows_the_envelope_in_one_pipelined_batch(bytewise: bool) -> None:
    batch = MAIL + b"RCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n" + CHUNK
    conversation = converse(
        [
            (GREETING, EHLO),
            (CHUNKING_CAPABILITIES, batch),
            (
                OK + OK + b"250 2.1.5 Ok\r\n" + QUEUED,
                b"RSET\r\n" + MAIL + b"RCPT TO:<carol@x.test>\r\n" + CHUNK,
            ),
            (OK + OK + OK + QUEUED, b"QUIT\r\n"),
        ],
        bytewise,
        messages=[(Msg(), [ALICE, BOB]), (Msg(), [CAROL])],
    )
    _, first, second = conversation.events
    assert first == MessageDone((0, 1), reply(250, "2.0.0", "Ok: queued as 4AB1"))
    assert second == MessageDone((0,), reply(250, "2.0.0", "Ok: queued as 4AB1"))


@pytest.mark.parametrize(
    ("answer", "fault", "bounce"),
    [
        (b"554 5.6.0 Message rejected\r\n", Fault.PERMANENT, True),
        (b"452 4.3.1 Insufficient storage\r\n", Fault.TRANSIENT, False),
    ],
)
def test_a_refused_bdat_is_the_end_of_data_reply(
    bytewise: bool, answer: bytes, fault: Fault, bounce: bool
) -> None:
    conversation = converse(
        [
            (GREETING, EHLO),
            (CHUNKING_CAPABILITIES, MAIL + b"RCPT TO:<alice@example.test>\r\n" + CHUNK),
            (OK + OK + answer, b""),
        ],
        bytewise,
        messages=[(Msg(), [ALICE])],
        quit=False,
    )
    failure = failed(conversation)
    assert failure.stage is Stage.DATA and failure.fault is fault
    assert failure.rule.bounce is bounce and failure.rule.scope is Scope.ALL
    assert conversation.conn.usable  # the session goes on: RSET before the next message


def test_all_refused_in_a_pipelined_batch_reads_the_bdat_refusal(bytewise: bool) -> None:
    """RFC 3030 2: the server reads the chunk it refuses; its 5xx is not the message's."""
    conversation = converse(
        [
            (GREETING, EHLO),
            (
                CHUNKING_CAPABILITIES,
                MAIL + b"RCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n" + CHUNK,
            ),
            (
                OK + b"550 5.1.1 No such user\r\n451 4.7.1 Greylisted\r\n"
                b"554 5.5.1 No valid recipients\r\n",
                b"",
            ),
        ],
        bytewise,
        messages=[(Msg(), [ALICE, BOB])],
        quit=False,
    )
    _, alice, bob, done = conversation.events
    assert isinstance(alice, RecipientRefused) and alice.failure.fault is Fault.PERMANENT
    assert isinstance(bob, RecipientRefused) and bob.failure.fault is Fault.TRANSIENT
    assert done == MessageDone((), None)
    assert conversation.conn.usable


def test_all_refused_without_pipelining_sends_no_bdat(bytewise: bool) -> None:
    conversation = converse(
        [
            (GREETING, EHLO),
            (LOCKSTEP_CHUNKING, MAIL),
            (OK, b"RCPT TO:<alice@example.test>\r\n"),
            (b"550 5.1.1 No such user\r\n", b"QUIT\r\n"),
            (b"221 2.0.0 Bye\r\n", b""),
        ],
        bytewise,
        messages=[(Msg(), [ALICE])],
    )
    _, refused, done, closed = conversation.events
    assert isinstance(refused, RecipientRefused)
    assert done == MessageDone((), None) and closed == Closed()


def test_a_refused_sender_decides_and_the_bdat_reply_is_read(bytewise: bool) -> None:
    conversation = converse(
        [
            (GREETING, EHLO),
            (CHUNKING_CAPABILITIES, MAIL + b"RCPT TO:<alice@example.test>\r\n" + CHUNK),
            (b"550 5.7.1 Sender rejected\r\n503 5.5.1 Need MAIL\r\n503 5.5.1 Need MAIL\r\n", b""),
        ],
        bytewise,
        messages=[(Msg(), [ALICE])],
        quit=False,
    )
    failure = failed(conversation)
    assert failure.stage is Stage.MAIL and failure.remote == reply(550, "5.7.1", "Sender rejected")
    assert conversation.conn.usable


def test_chunking_turned_off_sends_data(bytewise: bool) -> None:
    config = ClientConfig("client.test", WHERE, chunking=False)
    converse(
        [
            (GREETING, EHLO),
            (CHUNKING_CAPABILITIES, MAIL + b"RCPT TO:<alice@example.test>\r\nDATA\r\n"),
            (OK + OK + b"354 Go\r\n", STUFFED),
            (QUEUED, b""),
        ],
        bytewise,
        config=config,
        messages=[(Msg(), [ALICE])],
        quit=False,
    )

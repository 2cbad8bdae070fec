"""The POP3 core without sockets: whole input and byte at a time, and properties."""

from __future__ import annotations

import base64
from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.pop3.body import MessageBody
from postroom.pop3.connection import MaildropEntry, Pop3Config, Pop3Connection, unique_id
from postroom.pop3.events import (
    NEED_DATA,
    Authenticate,
    ConnectionClosed,
    Retrieve,
    StartTls,
    Update,
)

MESSAGES = {
    7: b"Subject: one\r\n\r\nfirst line\r\n.dot line\r\nlast\r\n",
    9: b"Subject: two\r\nX: y\r\n\r\nbody\r\n",
}
MAILDROP = [MaildropEntry(uid, unique_id(42, uid), len(data)) for uid, data in MESSAGES.items()]
CONFIG = Pop3Config(hostname="mx.example.test", tls_available=True)


class Driver:
    """Answers the core's events as a session would: bob/secret logs in, messages are
    those of MESSAGES, TLS always succeeds; records what was removed."""

    def __init__(self, conn: Pop3Connection) -> None:
        self.conn = conn
        self.out = bytearray(conn.greeting())
        self.removed: list[int] = []
        self.events: list[object] = []

    def feed(self, chunks: Iterable[bytes]) -> bytes:
        for chunk in chunks:
            self.conn.receive_data(chunk)
            self._events()
        return bytes(self.out)

    def _events(self) -> None:
        conn = self.conn
        while True:
            event = conn.next_event()
            self.out += conn.data_to_send()
            if event is NEED_DATA:
                return
            self.events.append(event)
            match event:
                case Authenticate(username=user, password=password, authzid=authzid):
                    if (user, password) == ("bob", "secret") and authzid in ("", "bob"):
                        conn.accept_login(user, MAILDROP)
                    else:
                        conn.refuse_login()
                case StartTls():
                    conn.start_tls()
                case Retrieve(uid=uid, top=top):
                    data = MESSAGES[uid]
                    self.out += conn.message_start(len(data))
                    body = MessageBody(top)
                    self.out += body.feed(data) + body.end()
                case Update(uids=uids):
                    self.removed += uids
                    conn.update_done(True)
                case ConnectionClosed():
                    return
            self.out += conn.data_to_send()


def run(
    data: bytes, *, tls: bool = True, split: bool = False, config: Pop3Config = CONFIG
) -> Driver:
    driver = Driver(Pop3Connection(config, tls=tls))
    driver.feed([data[i : i + 1] for i in range(len(data))] if split else [data])
    return driver


def lines(driver: Driver) -> list[bytes]:
    return bytes(driver.out).split(b"\r\n")


def test_a_whole_session_lists_retrieves_deletes_and_updates() -> None:
    script = (
        b"USER bob\r\nPASS secret\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nDELE 1\r\n"
        b"LIST 1\r\nSTAT\r\nQUIT\r\n"
    )
    driver = run(script)
    assert bytes(driver.out) == (
        b"+OK mx.example.test POP3 server ready\r\n"
        b"+OK Send your password\r\n"
        b"+OK Logged in, 2 messages\r\n"
        b"+OK 2 %d\r\n"
        % sum(len(m) for m in MESSAGES.values())
        + b"+OK 2 messages\r\n1 %d\r\n2 %d\r\n.\r\n" % (len(MESSAGES[7]), len(MESSAGES[9]))
        + b"+OK Unique-ID listing follows\r\n1 42.7\r\n2 42.9\r\n.\r\n"
        b"+OK %d octets\r\n"
        % len(MESSAGES[7])
        + b"Subject: one\r\n\r\nfirst line\r\n..dot line\r\nlast\r\n.\r\n"
        b"+OK Message 1 deleted\r\n"
        b"-ERR Message is deleted\r\n"
        b"+OK 1 %d\r\n" % len(MESSAGES[9]) + b"+OK Logging out\r\n"
    )
    assert driver.removed == [7]


def test_rset_undeletes_and_quit_then_removes_nothing() -> None:
    driver = run(b"USER bob\r\nPASS secret\r\nDELE 2\r\nRSET\r\nQUIT\r\n")
    assert driver.removed == []
    assert b"+OK 2 messages\r\n+OK Logging out\r\n" in bytes(driver.out)


def test_top_sends_the_header_and_the_first_lines() -> None:
    driver = run(b"USER bob\r\nPASS secret\r\nTOP 1 1\r\nTOP 2 0\r\nQUIT\r\n")
    out = bytes(driver.out)
    assert b"Subject: one\r\n\r\nfirst line\r\n.\r\n" in out
    assert b"Subject: two\r\nX: y\r\n\r\n.\r\n" in out


def test_auth_plain_with_an_initial_response_and_with_a_continuation() -> None:
    token = base64.b64encode(b"\0bob\0secret")
    driver = run(b"AUTH PLAIN " + token + b"\r\nQUIT\r\n")
    assert b"+OK Logged in, 2 messages" in bytes(driver.out)
    driver = run(b"AUTH PLAIN\r\n" + token + b"\r\nSTAT\r\n")
    assert b"+ \r\n+OK Logged in" in bytes(driver.out)


def test_a_refused_login_names_the_auth_response_code() -> None:
    driver = run(b"USER bob\r\nPASS wrong\r\nAUTH PLAIN " + base64.b64encode(b"\0bob\0x") + b"\r\n")
    assert lines(driver)[2:4] == [b"-ERR [AUTH] Authentication failed"] * 2


def test_a_cancelled_or_malformed_auth_is_refused() -> None:
    driver = run(b"AUTH PLAIN\r\n*\r\nAUTH PLAIN !!\r\nAUTH CRAM-MD5\r\n")
    replies = lines(driver)[1:]
    assert replies[0] == b"+ "
    assert all(r.startswith(b"-ERR") for r in replies[1:4])


def test_no_login_without_tls_and_capa_does_not_offer_it() -> None:
    driver = run(b"CAPA\r\nUSER bob\r\nAUTH PLAIN AGJvYgBzZWNyZXQ=\r\n", tls=False)
    out = bytes(driver.out)
    assert b"STLS\r\n" in out and b"USER\r\n" not in out and b"SASL" not in out
    assert out.count(b"-ERR [AUTH] Plaintext login is not allowed here: use STLS first") == 2


def test_a_listener_marked_plaintext_allows_login_without_tls() -> None:
    config = Pop3Config(hostname="h", tls_available=False, plaintext_login=True)
    driver = run(b"CAPA\r\nUSER bob\r\nPASS secret\r\n", tls=False, config=config)
    out = bytes(driver.out)
    assert b"USER\r\nSASL PLAIN\r\n" in out and b"STLS" not in out
    assert b"+OK Logged in" in out


def test_commands_pipelined_behind_stls_are_discarded() -> None:
    """CVE-2011-0411 class: what came in plaintext behind STLS is never read."""
    driver = run(b"STLS\r\nUSER bob\r\nPASS secret\r\n", tls=False)
    assert bytes(driver.out).endswith(b"+OK Begin TLS negotiation\r\n")
    assert [type(e) for e in driver.events] == [StartTls]
    assert driver.conn.tls and driver.conn.state.name == "AUTHORIZATION"


def test_stls_twice_or_after_tls_is_refused() -> None:
    driver = run(b"STLS\r\n")
    assert lines(driver)[1] == b"-ERR STLS is not available"


def test_a_long_line_is_refused_without_being_held() -> None:
    conn = Pop3Connection(CONFIG, tls=True)
    conn.receive_data(b"X" * 100_000)
    assert conn.next_event() is NEED_DATA
    assert len(conn._buffer) < CONFIG.max_line_length  # dropped as it came
    conn.receive_data(b"\r\nNOOP\r\n")
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"-ERR Line too long\r\n-ERR Log in first\r\n"


def test_too_many_errors_close_the_connection() -> None:
    driver = run(b"BOGUS\r\n" * 20)
    assert bytes(driver.out).endswith(b"-ERR Too many errors, closing connection\r\n")
    assert driver.conn.closed


def test_transaction_commands_need_a_login_and_bad_numbers_are_refused() -> None:
    driver = run(
        b"STAT\r\nUSER bob\r\nPASS secret\r\nRETR 3\r\nRETR x\r\nDELE 0\r\nTOP 1\r\nUSER a\r\n"
    )
    assert lines(driver)[1] == b"-ERR Log in first"
    assert lines(driver)[4:9] == [
        b"-ERR No such message",
        b"-ERR Syntax error",
        b"-ERR Syntax error",
        b"-ERR Syntax error",
        b"-ERR Already logged in",
    ]


def test_quit_before_login_closes_without_an_update() -> None:
    driver = run(b"QUIT\r\nSTAT\r\n")
    assert bytes(driver.out).endswith(b"+OK Bye\r\n")
    assert driver.removed == [] and driver.conn.closed


def test_a_message_body_is_dot_stuffed_and_ended_whatever_its_last_line() -> None:
    body = MessageBody()
    assert body.feed(b".a\r\n.") + body.feed(b"b") + body.end() == b"..a\r\n..b\r\n.\r\n"


SESSION = (
    b"CAPA\r\nUSER bob\r\nPASS secret\r\nSTAT\r\nLIST\r\nUIDL 2\r\nTOP 1 2\r\n"
    b"RETR 2\r\nDELE 2\r\nNOOP\r\nQUIT\r\n"
)


def test_byte_at_a_time_gives_the_same_bytes_as_whole() -> None:
    assert run(SESSION, split=True).out == run(SESSION).out


commands = st.sampled_from(
    [
        b"CAPA", b"USER bob", b"PASS secret", b"PASS x", b"STAT", b"LIST", b"LIST 1",
        b"UIDL", b"RETR 1", b"RETR 2", b"TOP 2 1", b"DELE 1", b"RSET", b"NOOP", b"QUIT",
        b"STLS", b"AUTH PLAIN", b"AUTH PLAIN AGJvYgBzZWNyZXQ=", b"*", b"AUTH",
    ]
)  # fmt: skip
inputs = st.lists(st.one_of(commands, st.binary(max_size=40)), max_size=15).map(
    lambda parts: b"\r\n".join(parts) + b"\r\n"
)


@settings(max_examples=300, deadline=None)
@given(inputs, st.booleans())
def test_no_input_raises(data: bytes, tls: bool) -> None:
    run(data, tls=tls)


@settings(max_examples=300, deadline=None)
@given(inputs, st.lists(st.integers(min_value=1, max_value=20), max_size=30))
def test_splitting_the_input_changes_nothing(data: bytes, cuts: list[int]) -> None:
    chunks, at = [], 0
    for size in cuts:
        chunks.append(data[at : at + size])
        at += size
    chunks.append(data[at:])
    whole = Driver(Pop3Connection(CONFIG, tls=True))
    whole.feed([data])
    split = Driver(Pop3Connection(CONFIG, tls=True))
    split.feed(chunks)
    assert split.out == whole.out and split.removed == whole.removed

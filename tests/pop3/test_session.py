"""POP3 sessions against an in-process server: real sockets, real TLS, poplib."""

from __future__ import annotations

import base64
import logging
import poplib
import smtplib
import socket
import ssl
from collections.abc import Iterator

import pytest

from postroom.config.settings import ListenerRole, ListenerSettings
from tests.support.servers import client_context
from tests.support.thread import MakeServer, ServerThread

USER, PASSWORD = "bob@example.test", "correct horse"
MESSAGE = b"From: alice@example.com\r\nSubject: hello\r\n\r\n.starts with a dot\r\nbye\r\n"


def _listeners(*, plaintext: bool = False) -> list[ListenerSettings]:
    roles = [ListenerRole.MX, ListenerRole.POP3, ListenerRole.POP3S]
    found = [ListenerSettings(address="127.0.0.1", port=0, role=role) for role in roles]
    if plaintext:
        found[1] = ListenerSettings(
            address="127.0.0.1", port=0, role=ListenerRole.POP3, plaintext_login=True
        )
    return found


@pytest.fixture
def pop3_server(make_server: MakeServer) -> ServerThread:
    server = make_server(listeners=_listeners())
    server.add_domain("example.test")
    server.add_user(USER, PASSWORD)
    return server


def _deliver(server: ServerThread, data: bytes = MESSAGE) -> None:
    server.server.mailboxes.deliver_sync(
        "example.test", "bob", data, sender="alice@example.com", recipient=USER
    )


@pytest.fixture
def client(pop3_server: ServerThread) -> Iterator[poplib.POP3]:
    pop = poplib.POP3("127.0.0.1", pop3_server.ports["pop3"], timeout=10)
    pop.stls(client_context(pop3_server.data_dir))
    yield pop
    pop.close()


def _raw(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert sock.recv(1024).startswith(b"+OK")
    return sock


def _ask(sock: socket.socket | ssl.SSLSocket, line: bytes) -> bytes:
    sock.sendall(line)
    return sock.recv(4096)


def test_every_command_over_stls(pop3_server: ServerThread, client: poplib.POP3) -> None:
    _deliver(pop3_server)
    _deliver(pop3_server, MESSAGE.replace(b"hello", b"second"))
    capa = client.capa()
    assert {"TOP", "UIDL", "USER", "SASL", "RESP-CODES", "PIPELINING"} <= set(capa)
    assert "STLS" not in capa  # TLS is on already
    client.user(USER)
    assert client.pass_(PASSWORD).startswith(b"+OK")
    size = len(MESSAGE) + len(f"Return-Path: <alice@example.com>\r\nDelivered-To: {USER}\r\n")
    assert client.stat() == (2, 2 * size + 1)  # "second" is one octet longer than "hello"
    _, listing, _ = client.list()
    assert listing == [f"1 {size}".encode(), f"2 {size + 1}".encode()]
    _, uids, _ = client.uidl()
    _, lines, _ = client.retr(1)
    assert b"\r\n".join(lines) + b"\r\n" == (
        b"Return-Path: <alice@example.com>\r\nDelivered-To: bob@example.test\r\n" + MESSAGE
    )  # poplib undoes the dot-stuffing of ".starts with a dot"
    _, top, _ = client.top(2, 0)
    assert top[-1] == b"" and b"Subject: second" in top and b"bye" not in top
    assert client.dele(1).startswith(b"+OK")
    with pytest.raises(poplib.error_proto, match="deleted"):
        client.retr(1)
    assert client.rset().startswith(b"+OK")
    assert client.noop().startswith(b"+OK")
    client.dele(2)
    assert client.quit().startswith(b"+OK")
    again = poplib.POP3_SSL(
        "127.0.0.1", pop3_server.ports["pop3s"], context=client_context(pop3_server.data_dir)
    )
    again.user(USER)
    again.pass_(PASSWORD)
    _, listing, _ = again.list()
    assert listing == [f"1 {size}".encode()]
    _, again_uids, _ = again.uidl()
    assert again_uids[0].split()[1] == uids[0].split()[1]  # the same name in every session
    again.close()


def test_login_before_tls_is_refused_and_not_offered(pop3_server: ServerThread) -> None:
    pop = poplib.POP3("127.0.0.1", pop3_server.ports["pop3"], timeout=10)
    try:
        assert "USER" not in pop.capa() and "STLS" in pop.capa()
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\].*STLS"):
            pop.user(USER)
    finally:
        pop.close()


def test_a_listener_marked_plaintext_on_loopback_allows_login(make_server: MakeServer) -> None:
    server = make_server(listeners=_listeners(plaintext=True))
    server.add_domain("example.test")
    server.add_user(USER, PASSWORD)
    pop = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
    try:
        pop.user(USER)
        assert pop.pass_(PASSWORD).startswith(b"+OK")
    finally:
        pop.close()


def test_commands_pipelined_behind_stls_are_discarded(pop3_server: ServerThread) -> None:
    sock = _raw(pop3_server.ports["pop3"])
    sock.sendall(b"STLS\r\nCAPA\r\n")
    assert sock.recv(1024) == b"+OK Begin TLS negotiation\r\n"
    context = client_context(pop3_server.data_dir)
    with context.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
        # The first answer over TLS is NOOP's: the CAPA sent in plaintext was never read.
        assert _ask(tls, b"NOOP\r\n") == b"-ERR Log in first\r\n"


def test_auth_plain_over_implicit_tls(pop3_server: ServerThread) -> None:
    _deliver(pop3_server)
    context = client_context(pop3_server.data_dir)
    raw = socket.create_connection(("127.0.0.1", pop3_server.ports["pop3s"]), timeout=10)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.recv(1024).startswith(b"+OK")
        token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
        assert _ask(tls, b"AUTH PLAIN\r\n") == b"+ \r\n"
        assert _ask(tls, token + b"\r\n") == b"+OK Logged in, 1 message\r\n"


def test_failed_logins_log_the_smtp_line_and_share_its_throttle(
    pop3_server: ServerThread, client: poplib.POP3, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with smtplib.SMTP("127.0.0.1", pop3_server.ports["mx"], timeout=10) as smtp:
        smtp.starttls(context=client_context(pop3_server.data_dir))
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login(USER, "wrong")  # smtplib tries each mechanism offered
    by_smtp = sum(1 for r in caplog.records if r.name == "postroom.smtp")
    assert 1 <= by_smtp < 5  # limits.auth.max_failures
    for _ in range(5 - by_smtp):
        client.user(USER)
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            client.pass_("wrong")
    lines = [r.getMessage() for r in caplog.records if r.name == "postroom.pop3"]
    assert lines == [f'auth failed: client=127.0.0.1 account="{USER}" listener=pop3'] * (
        5 - by_smtp
    )
    client.user(USER)
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\] Too many failed logins"):
        client.pass_(PASSWORD)  # refused unchecked, right or not


def test_a_message_sent_by_smtp_is_read_back_by_pop3_byte_for_byte(
    pop3_server: ServerThread, client: poplib.POP3
) -> None:
    sent = (
        b"From: Alice <alice@example.com>\r\nTo: bob@example.test\r\n"
        b"Message-ID: <one@example.com>\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
        b"Subject: byte for byte\r\n\r\n..a dot-stuffed line\r\nend\r\n"
    )
    with smtplib.SMTP("127.0.0.1", pop3_server.ports["mx"], timeout=10) as smtp:
        smtp.sendmail("alice@example.com", [USER], sent)
    assert pop3_server.run_delivery() == 1
    client.user(USER)
    client.pass_(PASSWORD)
    _, lines, _ = client.retr(1)
    retrieved = b"\r\n".join(lines) + b"\r\n"
    assert retrieved.startswith(b"Return-Path: <alice@example.com>\r\nDelivered-To: ")
    # Our trace headers (Return-Path, Delivered-To, Received) come first; then the
    # message exactly as sent: dot-stuffed on both wires, unstuffed at both ends.
    assert retrieved.endswith(sent)
    assert b"\r\nReceived: from " in retrieved


def test_a_long_line_is_refused_and_the_session_goes_on(pop3_server: ServerThread) -> None:
    with _raw(pop3_server.ports["pop3"]) as sock:
        sock.sendall(b"X" * 100_000 + b"\r\n")
        assert sock.recv(1024) == b"-ERR Line too long\r\n"
        assert _ask(sock, b"QUIT\r\n") == b"+OK Bye\r\n"


def test_an_idle_session_is_logged_out_without_removing_anything(
    make_server: MakeServer,
) -> None:
    server = make_server(listeners=_listeners(plaintext=True), mailboxes={"pop3_idle_timeout": 0.2})
    server.add_domain("example.test")
    server.add_user(USER, PASSWORD)
    _deliver(server)
    with _raw(server.ports["pop3"]) as sock:
        for line in (f"USER {USER}\r\n", f"PASS {PASSWORD}\r\n", "DELE 1\r\n"):
            assert _ask(sock, line.encode()).startswith(b"+OK")
        assert sock.recv(1024) == b"-ERR Autologout; idle for too long\r\n"
        assert sock.recv(1024) == b""  # closed
    status = server.call(server.server.mailboxes.account("example.test", "bob").status("INBOX"))
    assert status.messages == 1

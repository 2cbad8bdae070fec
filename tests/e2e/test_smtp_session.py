"""The SMTP front door over real sockets, with Python's smtplib and raw sockets."""

from __future__ import annotations

import gc
import re
import smtplib
import socket
import ssl
from collections import Counter
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

import pytest
import uvloop

from tests.conftest import FakeClock
from tests.support.loops import loop_factory  # noqa: F401 (both loops, for every test)
from tests.support.servers import client_context, smtp_client
from tests.support.thread import MakeServer, ServerThread


def test_the_server_runs_on_the_loop_asked_for(
    server: ServerThread, request: pytest.FixtureRequest
) -> None:
    asked = request.node.callspec.params["loop_factory"]
    assert isinstance(server.loop, uvloop.Loop) == (asked == "uvloop")


QUEUED = re.compile(rb"^2\.0\.0 Ok: queued as ([0-9A-Z]{16})$")


def message(subject: str = "hello", body: str = "Hello there.\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "app@example.test"
    msg["To"] = "app@example.test"
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def queued_id(reply: tuple[int, bytes]) -> str:
    code, text = reply
    assert code == 250, reply
    match = QUEUED.match(text)
    assert match, text
    return match.group(1).decode()


def send_data(client: smtplib.SMTP, data: bytes) -> str:
    return queued_id(client.data(data))


class Raw:
    """A line-level SMTP client on a raw socket, for what smtplib will not send."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, list[bytes]]:
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("closed")
            lines.append(line.rstrip(b"\r\n"))
            if line[3:4] != b"-":
                return int(line[:3]), [ln[4:] for ln in lines]

    def command(self, line: bytes) -> tuple[int, list[bytes]]:
        self.send(line + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


# -- mx role: mail for our domains ---------------------------------------------------------
def test_ehlo_on_mx_offers_starttls_but_not_auth_before_tls(server: ServerThread) -> None:
    with smtp_client(server.ports["mx"]) as client:
        code, text = client.ehlo("client.test")
        assert code == 250
        assert text.startswith(b"mail.test")
        for extension in (
            "pipelining",
            "size",
            "8bitmime",
            "smtputf8",
            "enhancedstatuscodes",
            "starttls",
            "chunking",
            "dsn",
        ):
            assert client.has_extn(extension), extension
        assert client.esmtp_features["size"] == str(25 * 1024 * 1024)
        assert not client.has_extn("auth")


def test_unauthenticated_mail_to_local_user_is_queued_with_received_header(
    server: ServerThread,
) -> None:
    with smtp_client(server.ports["mx"]) as client:
        client.ehlo("client.test")
        assert client.mail("sender@elsewhere.test") == (250, b"2.1.0 Sender ok")
        assert client.rcpt("app@example.test")[0] == 250
        queue_id = send_data(client, message().as_bytes(policy=SMTP_POLICY))
    stored = server.call(server.store.message(queue_id))
    assert stored is not None
    assert stored.sender == "sender@elsewhere.test"
    assert [r.address for r in stored.recipients] == ["app@example.test"]
    assert stored.client_ip == "127.0.0.1"
    assert stored.helo == "client.test"
    body = server.call(server.store.read_body(queue_id))
    assert body is not None
    assert body.startswith(b"Received: from client.test ([127.0.0.1])\r\n\tby mail.test (postroom)")
    assert f"with ESMTP id {queue_id}".encode() in body
    assert b"for <app@example.test>;" in body
    assert body.endswith(b"Hello there.\r\n")


def test_no_open_relay(server: ServerThread) -> None:
    with smtp_client(server.ports["mx"]) as client:
        client.ehlo("client.test")
        client.mail("sender@elsewhere.test")
        code, text = client.rcpt("victim@far-away.test")
        assert (code, text[:5]) == (550, b"5.7.1")


def test_unknown_local_user_is_refused_at_rcpt(server: ServerThread) -> None:
    with smtp_client(server.ports["mx"]) as client:
        client.ehlo("client.test")
        client.mail("sender@elsewhere.test")
        code, text = client.rcpt("nobody@example.test")
        assert (code, text[:5]) == (550, b"5.1.1")
        # RFC 5321 4.5.1: postmaster is always accepted for a local domain.
        assert client.rcpt("Postmaster@example.test")[0] == 250


# -- submission: STARTTLS and AUTH ----------------------------------------------------------
def test_submission_requires_auth_and_offers_it_only_after_starttls(server: ServerThread) -> None:
    with smtp_client(server.ports["submission"]) as client:
        client.ehlo("client.test")
        assert not client.has_extn("auth")
        code, text = client.mail("app@example.test")
        assert (code, text[:5]) == (530, b"5.7.0")
        code, text = client.docmd("AUTH", "PLAIN AGFwcEBleGFtcGxlLnRlc3QAcw==")
        assert (code, text[:6]) == (538, b"5.7.11")
        client.starttls(context=client_context(server.data_dir))
        code, _ = client.ehlo("client.test")
        assert client.has_extn("auth")
        assert "PLAIN" in client.esmtp_features["auth"]
        assert "LOGIN" in client.esmtp_features["auth"]
        assert not client.has_extn("starttls")


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_starttls_auth_and_relay(server: ServerThread, mechanism: str) -> None:
    with smtp_client(server.ports["submission"]) as client:
        client.starttls(context=client_context(server.data_dir))
        client.ehlo("client.test")
        client.user, client.password = "app@example.test", "s3cret-pass"
        code, text = client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))
        assert (code, text[:5]) == (235, b"2.7.0")
        client.mail("app@example.test")
        assert client.rcpt("someone@far-away.test")[0] == 250
        queue_id = send_data(client, message().as_bytes(policy=SMTP_POLICY))
    stored = server.call(server.store.message(queue_id))
    assert stored is not None
    assert stored.principal == "app@example.test"
    assert stored.protocol == "ESMTPSA"
    assert stored.tls is not None and stored.tls.startswith("TLSv1.")
    body = server.call(server.store.read_body(queue_id))
    assert body is not None
    assert b"with ESMTPSA id" in body
    assert b"(using TLSv1." in body


def test_implicit_tls_submissions(server: ServerThread) -> None:
    context = client_context(server.data_dir)
    with smtplib.SMTP_SSL(
        "localhost", server.ports["submissions"], context=context, timeout=10
    ) as client:
        client.ehlo("client.test")
        assert client.has_extn("auth") and not client.has_extn("starttls")
        client.login("app@example.test", "s3cret-pass")
        client.mail("app@example.test")
        client.rcpt("app@example.test")
        send_data(client, message().as_bytes(policy=SMTP_POLICY))
        assert isinstance(client.sock, ssl.SSLSocket)
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")


def test_wrong_password_then_throttle(make_server: MakeServer, fake_clock: FakeClock) -> None:
    srv: ServerThread = make_server(clock=fake_clock, limits={"auth": {"max_failures": 3}})
    srv.add_domain("example.test")
    srv.add_user("app@example.test", "s3cret-pass")

    def attempt(password: str) -> tuple[int, bytes | str]:
        with smtp_client(srv.ports["submission"]) as client:
            client.starttls(context=client_context(srv.data_dir))
            client.ehlo("client.test")
            client.user, client.password = "app@example.test", password
            try:
                return client.auth("PLAIN", client.auth_plain, initial_response_ok=True)
            except smtplib.SMTPAuthenticationError as exc:
                return exc.smtp_code, exc.smtp_error

    for _ in range(3):
        code, text = attempt("wrong")
        assert (code, text[:5]) == (535, b"5.7.8")
    code, text = attempt("s3cret-pass")  # even the right password waits out the window
    assert (code, text[:5]) == (454, b"4.7.0")
    fake_clock.advance(301)
    assert attempt("s3cret-pass")[0] == 235


def test_sender_domain_restriction(server: ServerThread) -> None:
    server.add_user("limited@example.test", "pw-limited-1", sender_domains=("example.test",))
    with smtp_client(server.ports["submission"]) as client:
        client.starttls(context=client_context(server.data_dir))
        client.ehlo("client.test")
        client.login("limited@example.test", "pw-limited-1")
        code, text = client.mail("someone@other.test")
        assert (code, text[:5]) == (553, b"5.7.1")
        assert client.mail("news@example.test")[0] == 250


# -- limits --------------------------------------------------------------------------------
def test_size_declared_and_actual(make_server: MakeServer) -> None:
    srv: ServerThread = make_server(limits={"max_message_size": 4096})
    srv.add_domain("example.test")
    srv.add_user("app@example.test", "pw")
    with smtp_client(srv.ports["mx"]) as client:
        client.ehlo("client.test")
        assert client.esmtp_features["size"] == "4096"
        code, text = client.mail("a@elsewhere.test", ["SIZE=5000"])
        assert (code, text[:5]) == (552, b"5.3.4")
        client.rset()
        client.mail("a@elsewhere.test")
        client.rcpt("app@example.test")
        code, text = client.data(b"Subject: big\r\n\r\n" + b"x" * 76 * 100)
        assert (code, text[:5]) == (552, b"5.3.4")
        # the session goes on
        client.mail("a@elsewhere.test")
        client.rcpt("app@example.test")
        send_data(client, b"Subject: small\r\n\r\nok\r\n")
    assert srv.call(srv.store.count_messages()) == 1


def test_recipient_limit(make_server: MakeServer) -> None:
    srv: ServerThread = make_server(limits={"max_recipients": 3})
    srv.add_domain("example.test")
    for i in range(4):
        srv.add_user(f"u{i}@example.test", "pw")
    with smtp_client(srv.ports["mx"]) as client:
        client.ehlo("client.test")
        client.mail("a@elsewhere.test")
        for i in range(3):
            assert client.rcpt(f"u{i}@example.test")[0] == 250
        code, text = client.rcpt("u3@example.test")
        assert (code, text[:5]) == (452, b"4.5.3")
        send_data(client, b"Subject: x\r\n\r\nok\r\n")


def test_line_too_long_and_unknown_command(server: ServerThread) -> None:
    raw = Raw(server.ports["mx"])
    try:
        code, lines = raw.command(b"NOOP " + b"x" * 5000)
        assert (code, lines[0][:5]) == (500, b"5.5.2")
        code, lines = raw.command(b"FROB")
        assert (code, lines[0][:5]) == (500, b"5.5.2")
        assert raw.command(b"NOOP")[0] == 250
    finally:
        raw.close()


def test_too_many_errors_closes(make_server: MakeServer) -> None:
    srv: ServerThread = make_server(limits={"max_errors": 3})
    raw = Raw(srv.ports["mx"])
    try:
        codes = [raw.command(b"FROB")[0] for _ in range(3)]
        assert codes[:2] == [500, 500]
        assert codes[2] == 421 or raw.reply()[0] == 421
        assert raw.file.readline() == b""
    finally:
        raw.close()


def test_connections_per_ip_limit(make_server: MakeServer) -> None:
    srv: ServerThread = make_server(limits={"max_connections_per_ip": 2})
    first, second = Raw(srv.ports["mx"]), Raw(srv.ports["mx"])
    try:
        third = socket.create_connection(("127.0.0.1", srv.ports["mx"]), timeout=10)
        reply = third.makefile("rb").readline()
        assert reply.startswith(b"421 4.7.0"), reply
        third.close()
        assert first.greeting[0] == 220 and second.greeting[0] == 220
    finally:
        first.close()
        second.close()


def test_command_timeout(make_server: MakeServer) -> None:
    srv: ServerThread = make_server(limits={"command_timeout": 0.3})
    raw = Raw(srv.ports["mx"])
    try:
        code, lines = raw.reply()  # nothing sent: the server gives up on us
        assert (code, lines[0][:5]) == (421, b"4.4.2")
    finally:
        raw.close()


def test_an_idle_session_holds_no_timer_and_no_coroutine_beyond_its_task_and_run(
    server: ServerThread,
) -> None:
    """Idle connections cost what each session holds while it waits, times every
    connection: the read deadlines share one timer of the loop, and the read is awaited
    in the session's own run, with no coroutine between it and the connection's task."""

    async def census() -> Counter[str]:
        return Counter(type(o).__name__ for o in gc.get_objects())

    before = server.call(census())
    clients = [Raw(server.ports["mx"]) for _ in range(20)]  # each greeted, then silent
    try:
        after = server.call(census())
    finally:
        for client in clients:
            client.close()
    assert after["TimerHandle"] - before["TimerHandle"] <= 1  # the shared one, if new
    assert after["coroutine"] - before["coroutine"] < 3 * len(clients)  # 2 each, and noise


def test_a_starttls_handshake_that_never_comes_is_cut_at_the_command_timeout(
    make_server: MakeServer,
) -> None:
    srv: ServerThread = make_server(limits={"command_timeout": 0.3})
    raw = Raw(srv.ports["submission"])
    try:
        raw.command(b"EHLO client.test")
        assert raw.command(b"STARTTLS")[0] == 220
        try:  # no ClientHello: the server gives up on the handshake and closes
            closed = raw.sock.recv(1024) == b""
        except ConnectionResetError:
            closed = True
        assert closed
    finally:
        raw.close()


def test_vrfy_help_noop_rset(server: ServerThread) -> None:
    raw = Raw(server.ports["mx"])
    try:
        raw.command(b"EHLO client.test")
        assert raw.command(b"VRFY app")[0] == 252
        assert raw.command(b"HELP")[0] == 214
        assert raw.command(b"NOOP")[0] == 250
        assert raw.command(b"RSET")[0] == 250
        assert raw.command(b"QUIT")[0] == 221
    finally:
        raw.close()


# -- pipelining, BDAT, DSN, smuggling ---------------------------------------------------------
def test_pipelined_transaction(server: ServerThread) -> None:
    raw = Raw(server.ports["mx"])
    try:
        raw.command(b"EHLO client.test")
        raw.send(
            b"MAIL FROM:<a@elsewhere.test>\r\nRCPT TO:<app@example.test>\r\n"
            b"RCPT TO:<nobody@example.test>\r\nDATA\r\n"
        )
        assert [raw.reply()[0] for _ in range(4)] == [250, 250, 550, 354]
        raw.send(b"Subject: p\r\n\r\nbody\r\n.\r\nNOOP\r\n")
        code, lines = raw.reply()
        assert code == 250 and QUEUED.match(lines[0])
        assert raw.reply()[0] == 250
    finally:
        raw.close()


def test_commands_pipelined_after_starttls_are_discarded(server: ServerThread) -> None:
    raw = Raw(server.ports["mx"])
    try:
        raw.command(b"EHLO client.test")
        raw.send(b"STARTTLS\r\nMAIL FROM:<evil@elsewhere.test>\r\n")
        assert raw.reply()[0] == 220
        context = client_context(server.data_dir)
        tls = context.wrap_socket(raw.sock, server_hostname="localhost")
        tls_file = tls.makefile("rb")
        tls.sendall(b"RCPT TO:<app@example.test>\r\n")
        line = tls_file.readline()
        # The injected MAIL was dropped, so RCPT is out of sequence.
        assert line.startswith(b"503 5.5.1"), line
        tls.close()
    finally:
        raw.close()


def test_bdat_chunks(server: ServerThread) -> None:
    raw = Raw(server.ports["mx"])
    try:
        raw.command(b"EHLO client.test")
        raw.command(b"MAIL FROM:<a@elsewhere.test>")
        raw.command(b"RCPT TO:<app@example.test>")
        part1 = b"Subject: bdat\r\n\r\n"
        part2 = b"line one\r\n.line with dot\r\n"
        raw.send(b"BDAT %d\r\n" % len(part1) + part1)
        assert raw.reply()[0] == 250
        raw.send(b"BDAT %d LAST\r\n" % len(part2) + part2)
        code, lines = raw.reply()
        assert code == 250
        match = QUEUED.match(lines[0])
        assert match
    finally:
        raw.close()
    body = server.call(server.store.read_body(match.group(1).decode()))
    assert body is not None and body.endswith(part1 + part2)


def test_dsn_parameters_are_stored(server: ServerThread) -> None:
    with smtp_client(server.ports["mx"]) as client:
        client.ehlo("client.test")
        client.mail("a@elsewhere.test", ["RET=HDRS", "ENVID=QQ314159+2B"])
        client.rcpt(
            "app@example.test", ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;app+2Bx@example.test"]
        )
        queue_id = send_data(client, b"Subject: dsn\r\n\r\nok\r\n")
    stored = server.call(server.store.message(queue_id))
    assert stored is not None
    assert (stored.ret, stored.envid) == ("HDRS", "QQ314159+")
    (rcpt,) = stored.recipients
    assert set((rcpt.notify or "").split(",")) == {"SUCCESS", "FAILURE"}
    assert rcpt.orcpt == "rfc822;app+x@example.test"


@pytest.mark.parametrize(
    "smuggled",
    [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\n", b"\n.\r", b"\r\n.\r", b"\r\n\x00.\r\n"],
)
def test_smuggling_variants_never_end_data(server: ServerThread, smuggled: bytes) -> None:
    raw = Raw(server.ports["mx"])
    try:
        raw.command(b"EHLO client.test")
        raw.command(b"MAIL FROM:<a@elsewhere.test>")
        raw.command(b"RCPT TO:<app@example.test>")
        assert raw.command(b"DATA")[0] == 354
        raw.send(
            b"Subject: s\r\n\r\nhello"
            + smuggled
            + b"MAIL FROM:<evil@elsewhere.test>\r\nRCPT TO:<app@example.test>\r\nDATA\r\n"
            + b"smuggled\r\n.\r\n"
        )
        code, lines = raw.reply()
        assert (code, lines[0][:5]) == (554, b"5.6.0"), lines
        assert raw.command(b"NOOP")[0] == 250  # nothing smuggled is waiting to be answered
    finally:
        raw.close()
    assert server.call(server.store.count_messages()) == 0


def test_dot_unstuffing(server: ServerThread) -> None:
    with smtp_client(server.ports["mx"]) as client:
        client.ehlo("client.test")
        client.mail("a@elsewhere.test")
        client.rcpt("app@example.test")
        # smtplib dot-stuffs; the stored message must be as the user wrote it.
        queue_id = send_data(client, b"Subject: dots\r\n\r\n.\r\n..two\r\n.x\r\n")
    body = server.call(server.store.read_body(queue_id))
    assert body is not None and body.endswith(b"\r\n\r\n.\r\n..two\r\n.x\r\n")

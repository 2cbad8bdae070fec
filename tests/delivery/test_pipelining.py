"""mta.transaction on the wire: pipelined batches, multi-line replies, stale connections, HELO,
AUTH LOGIN, and bytes that are not replies, against a scripted loopback server that
records every read it makes."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace

import pytest

from postroom.config.mailers import SmtpMailerSettings
from postroom.delivery.mailers.mta.pool import ConnectionPool
from postroom.delivery.mailers.mta.transaction import (
    Connection,
    Peer,
    SmtpClient,
    TlsMode,
    pooled_client,
)
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Disposition
from postroom.smtp.replies import Reply
from tests.conftest import FakeClock

DATA = b"From: app@example.test\r\nSubject: hi\r\n\r\n.a line with a dot\r\nbody\r\n"
MESSAGE = OutboundMessage(id="Q1", sender="app@example.test", data=DATA)
ALICE, BOB, CAROL = "alice@example.test", "bob@example.test", "carol@example.test"
EHLO = "250-script.test\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250 8BITMIME"
CHUNKING_EHLO = "250-script.test\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250 CHUNKING"
LOCKSTEP_CHUNKING_EHLO = "250-script.test\r\n250-SIZE 1000000\r\n250 CHUNKING"


def rcpts(*addresses: str) -> list[OutboundRecipient]:
    return [OutboundRecipient(a) for a in addresses]


@dataclass
class Script:
    """The server's replies; ``rcpt`` and ``mail`` by address, the rest fixed."""

    greeting: str = "220 script.test ESMTP"
    ehlo: str = EHLO
    helo: str = "250 script.test"
    mail: Mapping[str, str] = field(default_factory=dict)
    rcpt: Mapping[str, str] = field(default_factory=dict)
    data: str = "354 End data with <CR><LF>.<CR><LF>"
    data_without_recipients: str = "554 5.5.1 No valid recipients"
    end: str = "250 2.0.0 Ok: queued"
    rset: str = "250 2.0.0 Ok"
    starttls: str = "454 4.7.0 TLS not available"
    users: Mapping[str, str] = field(default_factory=dict)  # AUTH LOGIN


class ScriptedSession(asyncio.Protocol):
    def __init__(self, server: ScriptedServer) -> None:
        self.server, self.script = server, server.script
        self.buffer = b""
        self.in_data = False
        self.chunk: int | None = None  # octets of a BDAT chunk still to read
        self.sender: str | None = None
        self.recipients: list[str] = []
        self.login: list[str] | None = None  # AUTH LOGIN answers so far

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections += 1
        self.server.transports.append(transport)
        self.number = self.server.connections
        self.reply(self.script.greeting)

    def reply(self, text: str) -> None:
        self.transport.write(text.encode() + b"\r\n")

    def data_received(self, data: bytes) -> None:
        self.server.reads.append((self.number, data))
        self.buffer += data
        while not self.transport.is_closing():
            if self.chunk is not None:
                if len(self.buffer) < self.chunk:
                    return
                self.bdat_chunk(self.buffer[: self.chunk])
                self.buffer, self.chunk = self.buffer[self.chunk :], None
                continue
            if self.in_data:
                if self.buffer.startswith(b".\r\n"):
                    end = 0
                elif (end := self.buffer.find(b"\r\n.\r\n")) >= 0:
                    end += 2
                else:
                    return
                self.server.messages.append((tuple(self.recipients), self.buffer[:end]))
                self.buffer, self.in_data = self.buffer[end + 3 :], False
                self.reply(self.script.end)
                self.sender, self.recipients = None, []
                continue
            line, found, rest = self.buffer.partition(b"\r\n")
            if not found:
                return
            self.buffer = rest
            self.server.commands.append(line.decode())
            self.command(line.decode())

    def command(self, line: str) -> None:
        if self.login is not None:
            return self.auth_step(line)
        verb, _, argument = line.partition(" ")
        match verb.upper():
            case "EHLO":
                self.reply(self.script.ehlo)
            case "HELO":
                self.reply(self.script.helo)
            case "MAIL":
                sender = argument.partition("<")[2].partition(">")[0]
                reply = self.script.mail.get(sender, "250 2.1.0 Ok")
                self.sender = sender if reply.startswith("250") else None
                self.reply(reply)
            case "RCPT" if self.sender is None:
                self.reply("503 5.5.1 Need MAIL first")
            case "RCPT":
                address = argument.partition("<")[2].partition(">")[0]
                reply = self.script.rcpt.get(address, "250 2.1.5 Ok")
                if reply.startswith("250"):
                    self.recipients.append(address)
                self.reply(reply)
            case "DATA" if self.sender is None:
                self.reply("503 5.5.1 Need MAIL first")
            case "DATA":
                ready = bool(self.recipients) or self.script.data_without_recipients[:3] == "354"
                self.in_data = ready
                self.reply(self.script.data if ready else self.script.data_without_recipients)
            case "BDAT":
                size, _, last = argument.partition(" ")
                assert last.upper() == "LAST", "the client sends one chunk"
                self.chunk = int(size)
            case "RSET":
                self.sender, self.recipients = None, []
                self.reply(self.script.rset)
                if self.script.rset.startswith("421"):
                    self.transport.close()
            case "STARTTLS":
                self.reply(self.script.starttls)
            case "AUTH" if argument.upper() == "LOGIN":
                self.login = []
                self.reply("334 VXNlcm5hbWU6")
            case "QUIT":
                self.reply("221 2.0.0 Bye")
                self.transport.close()
            case _:
                self.reply("502 5.5.1 Not implemented")

    def bdat_chunk(self, chunk: bytes) -> None:
        """RFC 3030 2: the chunk's octets are read even when the command is refused."""
        if self.sender is None:
            self.reply("503 5.5.1 Need MAIL first")
        elif not self.recipients:
            self.reply(self.script.data_without_recipients)
        else:
            self.server.messages.append((tuple(self.recipients), chunk))
            self.reply(self.script.end)
        self.sender, self.recipients = None, []

    def auth_step(self, line: str) -> None:
        assert self.login is not None
        self.login.append(base64.b64decode(line).decode())
        if len(self.login) == 1:
            return self.reply("334 UGFzc3dvcmQ6")
        username, password = self.login
        self.login = None
        if self.script.users.get(username) == password:
            self.server.logins.append(username)
            return self.reply("235 2.7.0 Authentication successful")
        self.reply("535 5.7.8 Authentication credentials invalid")


class ScriptedServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.reads: list[tuple[int, bytes]] = []  # (connection, what one read returned)
        self.commands: list[str] = []
        self.messages: list[tuple[tuple[str, ...], bytes]] = []  # (recipients, wire data)
        self.logins: list[str] = []
        self.connections = 0
        self.transports: list[asyncio.Transport] = []

    async def start(self, host: str = "127.0.0.1") -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: ScriptedSession(self), host, 0)
        return int(self._server.sockets[0].getsockname()[1])

    def reads_of(self, connection: int) -> list[bytes]:
        return [data for number, data in self.reads if number == connection]

    def close(self) -> None:
        self._server.close()
        for transport in self.transports:
            transport.abort()


@dataclass
class Harness:
    client: SmtpClient
    pool: ConnectionPool[Connection]
    servers: list[ScriptedServer] = field(default_factory=list)

    async def serve(
        self, script: Script | None = None, host: str = "127.0.0.1"
    ) -> tuple[ScriptedServer, Peer]:
        server = ScriptedServer(script or Script())
        self.servers.append(server)
        port = await server.start(host)
        return server, Peer("mx.example.test", host, port, TlsMode.NONE)


@pytest.fixture
async def harness(fake_clock: FakeClock) -> AsyncIterator[Harness]:
    pool: ConnectionPool[Connection] = ConnectionPool(clock=fake_clock)
    client = SmtpClient(
        mailer="mx",
        hostname="mail.test",
        clock=fake_clock,
        pool=pool,
        connect_timeout=1.0,
        command_timeout=1.0,
        chunking=True,
    )
    harness = Harness(client, pool)
    yield harness
    await pool.aclose()
    for server in harness.servers:
        server.close()
    await asyncio.sleep(0)


# -- pipelining ------------------------------------------------------------------------------
async def test_mail_rcpt_and_data_go_out_in_one_write(harness: Harness) -> None:
    server, peer = await harness.serve()
    first = await harness.client.deliver(peer, MESSAGE, rcpts(ALICE, BOB))
    second = await harness.client.deliver(peer, MESSAGE, rcpts(CAROL))
    assert {o.disposition for o in first.outcomes + second.outcomes} == {Disposition.DELIVERED}
    mail = f"MAIL FROM:<app@example.test> SIZE={len(DATA)}\r\n".encode()
    batch = mail + b"RCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
    # On the reused connection RSET leads the batch: still one write, no extra round trip.
    again = b"RSET\r\n" + mail + b"RCPT TO:<carol@example.test>\r\nDATA\r\n"
    reads = server.reads_of(1)
    assert batch in reads and again in reads
    assert server.connections == 1
    stuffed = DATA.replace(b"\r\n.", b"\r\n..")
    assert server.messages == [((ALICE, BOB), stuffed), ((CAROL,), stuffed)]


async def test_a_large_message_is_written_in_large_pieces(harness: Harness) -> None:
    server, peer = await harness.serve()
    data = b"Subject: big\r\n\r\n" + b".line that needs stuffing\r\n" * 20_000
    message = OutboundMessage(id="Q2", sender="app@example.test", data=data)
    result = await harness.client.deliver(peer, message, rcpts(ALICE))
    assert result.outcomes[0].disposition is Disposition.DELIVERED
    assert server.messages[0][1] == data.replace(b"\r\n.", b"\r\n..")
    assert len(server.reads) < 100  # not one write per line (20,000 of them)


async def test_greylisting_one_recipient_inside_a_pipelined_batch(harness: Harness) -> None:
    server, peer = await harness.serve(Script(rcpt={BOB: "451 4.7.1 Greylisted, try again later"}))
    result = await harness.client.deliver(peer, MESSAGE, rcpts(ALICE, BOB, CAROL))
    alice, bob, carol = result.outcomes
    assert alice.disposition is carol.disposition is Disposition.DELIVERED
    assert bob.disposition is Disposition.DEFERRED and bob.failover
    assert bob.reply == Reply(451, "4.7.1", "Greylisted, try again later")
    assert result.retry == frozenset()  # RCPT 4xx: not a reason to try another host
    assert [recipients for recipients, _ in server.messages] == [(ALICE, CAROL)]


async def test_a_421_to_one_recipient_defers_everyone_left_and_drops_the_session(
    harness: Harness,
) -> None:
    """RFC 5321 3.8: a 421 ends the session whatever it answers; the recipients not settled
    yet wait for another host, and the connection is not pooled."""
    refused = {ALICE: "550 5.1.1 No such user", BOB: "421 4.3.2 Shutting down"}
    server, peer = await harness.serve(Script(rcpt=refused))
    result = await harness.client.deliver(peer, MESSAGE, rcpts(ALICE, BOB, CAROL))
    alice, bob, carol = result.outcomes
    assert alice.disposition is Disposition.BOUNCED
    assert bob.disposition is carol.disposition is Disposition.DEFERRED
    assert bob.reply == carol.reply == Reply(421, "4.3.2", "Shutting down")
    assert bob.failover and result.retry == {BOB, CAROL}
    assert server.messages == [] and harness.pool.idle_count() == 0


async def test_all_recipients_refused_no_data_and_the_session_is_reset(harness: Harness) -> None:
    refused = {ALICE: "550 5.1.1 No such user", BOB: "450 4.2.0 Mailbox busy"}
    server, peer = await harness.serve(Script(rcpt=refused))
    result = await harness.client.deliver(peer, MESSAGE, rcpts(ALICE, BOB))
    alice, bob = result.outcomes
    assert alice.disposition is Disposition.BOUNCED and bob.disposition is Disposition.DEFERRED
    assert server.messages == []  # DATA got 554: nothing else was sent
    assert server.commands[-1] == "DATA"
    assert harness.pool.idle_count() == 1
    again = await harness.client.deliver(peer, MESSAGE, rcpts(CAROL))
    assert again.outcomes[0].disposition is Disposition.DELIVERED
    assert server.commands[-4:] == [
        "RSET", f"MAIL FROM:<app@example.test> SIZE={len(DATA)}", f"RCPT TO:<{CAROL}>", "DATA",
    ]  # fmt: skip
    assert server.connections == 1


async def test_all_recipients_refused_but_data_accepted_sends_a_single_dot(
    harness: Harness,
) -> None:
    """RFC 2920 3.1: a server may say 354 to a pipelined DATA that has no recipients."""
    server, peer = await harness.serve(
        Script(
            rcpt={ALICE: "550 5.1.1 No such user"}, data_without_recipients="354 Go ahead anyway"
        )
    )
    result = await harness.client.deliver(peer, MESSAGE, rcpts(ALICE))
    assert result.outcomes[0].disposition is Disposition.BOUNCED
    assert server.messages == [((), b"")]  # the dot alone: no content left us
    again = await harness.client.deliver(peer, MESSAGE, rcpts(BOB))
    assert again.outcomes[0].disposition is Disposition.DELIVERED
    assert server.connections == 1


async def test_a_refused_sender_settles_all_by_the_mail_reply(harness: Harness) -> None:
    """The RCPT and DATA replies after a failed MAIL (503s) must not judge recipients."""
    server, peer = await harness.serve(
        Script(mail={"app@example.test": "550 5.7.1 Sender rejected"})
    )
    result = await harness.client.deliver(peer, MESSAGE, rcpts(ALICE, BOB))
    assert [o.reply for o in result.outcomes] == [Reply(550, "5.7.1", "Sender rejected")] * 2
    assert {o.disposition for o in result.outcomes} == {Disposition.BOUNCED}
    other = OutboundMessage(id="Q3", sender="ok@example.test", data=DATA)
    again = await harness.client.deliver(peer, other, rcpts(ALICE))
    assert again.outcomes[0].disposition is Disposition.DELIVERED
    assert server.connections == 1  # every reply of the failed batch was read


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6(), reason="no IPv6 loopback")
async def test_an_ipv6_peer(harness: Harness) -> None:
    server, peer = await harness.serve(host="::1")
    [outcome] = (await harness.client.deliver(peer, MESSAGE, rcpts(ALICE))).outcomes
    assert outcome.disposition is Disposition.DELIVERED
    assert outcome.remote is not None and outcome.remote.ip == "::1"
    assert server.messages[0][0] == (ALICE,)


# -- BDAT (RFC 3030 CHUNKING) -------------------------------------------------------------
DOTTED = b"Subject: dots\r\n\r\n.\r\n..two\r\n.one\r\nend without a line break"


async def test_bdat_carries_the_message_unchanged_in_the_pipelined_batch(
    harness: Harness,
) -> None:
    server, peer = await harness.serve(Script(ehlo=CHUNKING_EHLO))
    message = OutboundMessage(id="Q2", sender="app@example.test", data=DOTTED + b"\r\n")
    result = await harness.client.deliver(peer, message, rcpts(ALICE, BOB))
    assert {o.disposition for o in result.outcomes} == {Disposition.DELIVERED}
    assert server.messages == [((ALICE, BOB), message.data)]  # no stuffing, no final dot
    size = len(message.data)
    batch = (
        f"MAIL FROM:<app@example.test> SIZE={size}\r\n".encode()
        + b"RCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
        + f"BDAT {size} LAST\r\n".encode()
        + message.data
    )
    assert server.reads_of(1) == [b"EHLO mail.test\r\n", batch]
    assert "DATA" not in server.commands


async def test_bdat_without_pipelining_after_the_last_rcpt_reply(harness: Harness) -> None:
    script = Script(ehlo=LOCKSTEP_CHUNKING_EHLO, rcpt={ALICE: "550 5.1.1 No such user"})
    server, peer = await harness.serve(script)
    result = await harness.client.deliver(peer, MESSAGE, rcpts(ALICE, BOB))
    alice, bob = result.outcomes
    assert alice.disposition is Disposition.BOUNCED and bob.disposition is Disposition.DELIVERED
    assert server.messages == [((BOB,), DATA)]
    assert server.commands[-1] == f"BDAT {len(DATA)} LAST"


async def test_bdat_refused_for_the_message_settles_every_accepted_recipient(
    harness: Harness,
) -> None:
    server, peer = await harness.serve(
        Script(ehlo=CHUNKING_EHLO, end="552 5.3.4 Message too big for policy")
    )
    result = await harness.client.deliver(peer, MESSAGE, rcpts(ALICE, BOB))
    assert {o.disposition for o in result.outcomes} == {Disposition.BOUNCED}
    assert {o.reply for o in result.outcomes} == {Reply(552, "5.3.4", "Message too big for policy")}
    await harness.client.deliver(peer, MESSAGE, rcpts(CAROL))  # the session goes on
    assert server.connections == 1 and "RSET" in server.commands


async def test_all_refused_the_pipelined_bdat_refusal_judges_nobody(harness: Harness) -> None:
    refused = {ALICE: "550 5.1.1 No such user", BOB: "450 4.2.0 Mailbox busy"}
    server, peer = await harness.serve(Script(ehlo=CHUNKING_EHLO, rcpt=refused))
    result = await harness.client.deliver(peer, MESSAGE, rcpts(ALICE, BOB))
    alice, bob = result.outcomes
    assert alice.disposition is Disposition.BOUNCED and bob.disposition is Disposition.DEFERRED
    assert alice.reply == Reply(550, "5.1.1", "No such user")
    assert bob.reply == Reply(450, "4.2.0", "Mailbox busy")
    assert server.messages == [] and server.commands[-1] == f"BDAT {len(DATA)} LAST"
    assert harness.pool.idle_count() == 1  # the session is kept: RSET before the next


async def test_a_mailer_with_chunking_off_sends_data_to_a_chunking_peer(
    harness: Harness, fake_clock: FakeClock
) -> None:
    server, peer = await harness.serve(Script(ehlo=CHUNKING_EHLO))
    settings = SmtpMailerSettings(name="relay", host=peer.host, timeout=1.0, chunking=False)
    pool, client = pooled_client(
        settings, hostname="mail.test", clock=fake_clock, max_per_destination=1
    )
    result = await client.deliver(peer, MESSAGE, rcpts(ALICE))
    await pool.aclose()
    assert result.outcomes[0].disposition is Disposition.DELIVERED
    assert server.messages == [((ALICE,), DATA.replace(b"\r\n.", b"\r\n.."))]
    assert "DATA" in server.commands


# -- replies ---------------------------------------------------------------------------------
async def test_multi_line_replies(harness: Harness) -> None:
    _, peer = await harness.serve(
        Script(
            greeting="220-script.test ESMTP\r\n220-no UCE\r\n220 welcome",
            rcpt={BOB: "550-5.1.1 No such user\r\n550 5.1.1 here"},
            end="250-2.0.0 Ok\r\n250 2.0.0 queued as X1",
        )
    )
    alice, bob = (await harness.client.deliver(peer, MESSAGE, rcpts(ALICE, BOB))).outcomes
    assert alice.reply == Reply(250, "2.0.0", ("Ok", "queued as X1"))
    assert bob.reply == Reply(550, "5.1.1", ("No such user", "here"))
    assert bob.disposition is Disposition.BOUNCED


async def test_bytes_that_are_not_a_reply_defer_and_drop_the_connection(
    harness: Harness,
) -> None:
    _, peer = await harness.serve(Script(rcpt={ALICE: "I am not an SMTP server"}))
    result = await harness.client.deliver(peer, MESSAGE, rcpts(ALICE))
    [outcome] = result.outcomes
    assert outcome.disposition is Disposition.DEFERRED and outcome.failover
    assert (outcome.reply.code, outcome.reply.enhanced) == (451, "4.4.2")
    assert "protocol error: malformed reply" in str(outcome.reply)
    assert result.retry == {ALICE} and harness.pool.idle_count() == 0


# -- connections -----------------------------------------------------------------------------
async def test_a_pooled_connection_that_refuses_rset_is_replaced(harness: Harness) -> None:
    """An idle timeout on the server's side (421) costs a new connection, not a deferral."""
    server, peer = await harness.serve(Script(rset="421 4.4.2 Idle for too long"))
    await harness.client.deliver(peer, MESSAGE, rcpts(ALICE))
    result = await harness.client.deliver(peer, MESSAGE, rcpts(BOB))
    assert result.outcomes[0].disposition is Disposition.DELIVERED
    assert server.connections == 2
    assert [recipients for recipients, _ in server.messages] == [(ALICE,), (BOB,)]


async def test_helo_when_ehlo_is_unknown_then_one_command_at_a_time(harness: Harness) -> None:
    server, peer = await harness.serve(Script(ehlo="502 5.5.1 EHLO not implemented"))
    for recipient in (ALICE, BOB):
        result = await harness.client.deliver(peer, MESSAGE, rcpts(recipient))
        assert result.outcomes[0].disposition is Disposition.DELIVERED
    assert server.commands[:2] == ["EHLO mail.test", "HELO mail.test"]
    # No PIPELINING: every command in a read of its own, and no SIZE parameter.
    reads = server.reads_of(1)
    assert b"MAIL FROM:<app@example.test>\r\n" in reads
    assert b"RCPT TO:<alice@example.test>\r\n" in reads and b"DATA\r\n" in reads
    assert b"RSET\r\n" in reads  # the probe before reuse
    assert server.connections == 1


async def test_auth_login_when_plain_is_not_offered(harness: Harness) -> None:
    server, peer = await harness.serve(
        Script(ehlo="250-script.test\r\n250-PIPELINING\r\n250 AUTH LOGIN", users={"app": "s3cret"})
    )
    login = replace(peer, username="app", password="s3cret")
    result = await harness.client.deliver(login, MESSAGE, rcpts(ALICE))
    assert result.outcomes[0].disposition is Disposition.DELIVERED
    assert server.logins == ["app"] and server.commands[1] == "AUTH LOGIN"
    wrong = replace(peer, username="app", password="x")
    [outcome] = (await harness.client.deliver(wrong, MESSAGE, rcpts(ALICE))).outcomes
    assert outcome.disposition is Disposition.DEFERRED
    assert (outcome.reply.code, outcome.reply.enhanced) == (454, "4.7.0")
    assert "535 5.7.8" in str(outcome.reply)


async def test_no_common_auth_mechanism(harness: Harness) -> None:
    _, peer = await harness.serve(Script(ehlo="250-script.test\r\n250 AUTH CRAM-MD5"))
    login = replace(peer, username="app", password="x")
    [outcome] = (await harness.client.deliver(login, MESSAGE, rcpts(ALICE))).outcomes
    assert outcome.disposition is Disposition.DEFERRED
    assert "no common AUTH mechanism (offered: CRAM-MD5)" in str(outcome.reply)


async def test_replies_injected_after_the_starttls_220_are_refused(harness: Harness) -> None:
    """Bytes after 220 came in the clear; a man in the middle may have written them."""
    server, peer = await harness.serve(
        Script(
            ehlo="250-script.test\r\n250-PIPELINING\r\n250 STARTTLS",
            starttls="220 2.0.0 Ready to start TLS\r\n250-injected\r\n250 AUTH PLAIN",
        )
    )
    required = replace(peer, tls=TlsMode.STARTTLS, verify=True)
    [outcome] = (await harness.client.deliver(required, MESSAGE, rcpts(ALICE))).outcomes
    assert (outcome.reply.code, outcome.reply.enhanced) == (454, "4.7.5")
    assert "sent more than its 220 reply to STARTTLS" in str(outcome.reply)
    assert not any(c.startswith("MAIL") for c in server.commands)

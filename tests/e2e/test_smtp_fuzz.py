"""A bounded SMTP fuzz run against `postroom serve`: every listener role, a DKIM key, the
inbound checks on against a loopback DNS server.

Several hundred cases of random and mutated commands, header blocks and bodies
(tests/support/smtp_fuzz.py, one fixed seed), ten times as many in a deep run
(tests/support/depth.py). What must hold:
- every command line and every message gets one well-formed reply, in order; the server
  closes only after 421 (or 221 to QUIT), never with EOF where a reply is owed;
- nothing goes wrong inside: no traceback and no error in the server's log;
- afterwards a normal message is accepted on each listener, and the server stops cleanly.
"""

from __future__ import annotations

import base64
import contextlib
import random
import re
import signal
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from postroom.mailauth.dkim import DkimSigner, KeyRing, record_strings
from tests.support.depth import examples
from tests.support.dns_server import DnsServer
from tests.support.servers import (
    NO_DNS,
    RunningProcess,
    cli_out,
    client_context,
    start_process,
    write_config,
)
from tests.support.smtp_fuzz import (
    Batch,
    Chunked,
    Line,
    Step,
    Transaction,
    fuzz_case,
    junk_line,
    message_bodies,
)

SEED = 20261204
CASES = {"mx": examples(400), "submission": examples(150), "submissions": examples(150)}
USER, PASSWORD = "app@example.test", "fuzz-pass-1"
REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -])([\x20-\x7e]*)\r\n")
ENHANCED = re.compile(rb"[245]\.[0-9]{1,3}\.[0-9]{1,3}( |$)")
PAST = 1_700_000_000.0


class Closed(Exception):
    """The server ended the session properly (421, or 221 to QUIT)."""


@dataclass
class Reply:
    code: int
    lines: list[bytes]


class Session:
    """One connection, read and written step by step; every reply is checked on arrival."""

    def __init__(self, sock: socket.socket, tls: ssl.SSLContext) -> None:
        self.sock = sock
        self.tls = tls
        self.buffer = b""
        self.last: Reply | None = None

    # -- the wire ------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # the server closed first: its replies come next
            self.sock.sendall(data)

    def _line(self) -> bytes | None:
        while b"\r\n" not in self.buffer:
            assert len(self.buffer) < 4096, f"reply line without an end: {self.buffer[:200]!r}"
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            except TimeoutError:
                raise AssertionError(f"no reply within the timeout (after {self.last})") from None
            if not data:
                assert not self.buffer, f"connection closed inside a reply: {self.buffer!r}"
                return None
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line + b"\r\n"

    def reply(self) -> Reply | None:
        """The next whole reply, checked for form; None at the server's end of stream."""
        lines: list[bytes] = []
        while True:
            line = self._line()
            if line is None:
                assert not lines, f"connection closed inside a multi-line reply: {lines}"
                return None
            match = REPLY_LINE.fullmatch(line)
            assert match, f"malformed reply line {line!r}"
            assert not lines or lines[0][:3] == line[:3], f"codes differ in {[*lines, line]}"
            lines.append(line)
            if match.group(2) == b" ":
                code = int(match.group(1))
                if code >= 400:
                    assert ENHANCED.match(match.group(3)), f"no enhanced status code: {line!r}"
                    assert match.group(3)[:1] == match.group(1)[:1], line
                self.last = Reply(code, lines)
                return self.last

    def expect(self, count: int) -> list[Reply]:
        """``count`` replies are owed; a closing reply ends the session (then EOF)."""
        replies = []
        for _ in range(count):
            reply = self.reply()
            assert reply is not None, f"EOF where a reply was owed (after {self.last})"
            replies.append(reply)
            if reply.code in (421, 221) or reply.lines[-1].startswith(b"501 5.5.4 Syntax: BDAT"):
                assert self.reply() is None, "more after a closing reply"
                raise Closed
        return replies

    def command(self, line: bytes) -> Reply:
        self.send(line)
        return self.expect(1)[0]

    def start_tls(self) -> None:
        self.sock = self.tls.wrap_socket(self.sock, server_hostname="mail.test")
        self.buffer = b""

    # -- steps ---------------------------------------------------------------------------
    def run(self, step: Step, rng: random.Random) -> None:
        match step:
            case Line(data=data):
                self._answered(self.command(data), data, rng)
            case Batch(lines=lines):
                self.send(b"".join(lines))
                self.expect(len(lines))
            case Chunked():
                self._chunk(step)
            case Transaction():
                self._transaction(step)

    def _answered(self, reply: Reply, line: bytes, rng: random.Random) -> None:
        """A lone line may change what comes next: follow it where the server went."""
        if reply.code == 354:  # DATA was accepted: an empty message
            self.command(b"\r\n.\r\n")
        elif reply.code == 334:  # a SASL exchange: junk answers, then cancel
            for _ in range(2):
                answer = self.command(junk_line(rng, pipelined=True))
                if answer.code != 334:
                    return
            self.command(b"*\r\n")
        elif reply.code == 220 and line.strip().upper().startswith(b"STARTTLS"):
            self.start_tls()

    def _chunk(self, chunk: Chunked) -> None:
        last = b" LAST" if chunk.last else b""
        self.send(b"BDAT %d%s\r\n" % (chunk.count, last) + chunk.octets + b"".join(chunk.after))
        self.expect(1 + len(chunk.after))

    def _transaction(self, t: Transaction) -> None:
        lines = [b"MAIL FROM:" + t.sender + b"\r\n"]
        lines += [b"RCPT TO:" + r + b"\r\n" for r in t.recipients]
        if t.pipelined:
            self.send(b"".join(lines))
            self.expect(len(lines))
        else:
            for line in lines:
                self.command(line)
        if t.chunks is not None:
            for chunk in t.chunks:
                self._chunk(chunk)
        elif self.command(b"DATA\r\n").code == 354:
            self.send(_dot_stuffed(t.body) + b".\r\n")
            self.expect(1)


def _dot_stuffed(body: bytes) -> bytes:
    """RFC 5321 4.5.2, and ending in CRLF, so the body never ends the data early."""
    stuffed = body.replace(b"\r\n.", b"\r\n..")
    stuffed = b"." + stuffed if stuffed.startswith(b".") else stuffed
    return stuffed if stuffed.endswith(b"\r\n") else stuffed + b"\r\n"


# -- the server ------------------------------------------------------------------------------
ZONE = {
    "sender.test": {"TXT": ['"v=spf1 ip4:127.0.0.1 -all"']},
    "_dmarc.sender.test": {"TXT": ['"v=DMARC1; p=reject"']},
    "_dmarc.example.test": {"TXT": ['"v=DMARC1; p=none"']},
}  # the DKIM keys' records are added as the keys are made


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer(ZONE) as server:
        yield server


@pytest.fixture
def fuzz_server(tmp_path: Path, dns_server: DnsServer) -> Iterator[RunningProcess]:
    data_dir = tmp_path / "data"
    config = write_config(
        tmp_path / "postroom.toml",
        data_dir,
        "[limits]\nmax_errors = 25\n[limits.auth]\nmax_failures = 1000000\n"
        "[inbound_auth]\nenabled = true\n",
    )
    config.write_text(config.read_text().replace(NO_DNS, dns_server.address))
    cli_out(config, "domain", "add", "example.test")
    cli_out(config, "user", "add", USER, "--password-stdin", stdin=PASSWORD + "\n")
    ours = KeyRing(data_dir)  # mail from our user is signed: a key for example.test
    for key in (
        ours.generate("example.test", "r1", "rsa", 1024),
        ours.generate("example.test", "e1", "ed25519"),
    ):
        dns_server.set(key.record_name, "TXT", record_strings(key.record()))
    server = start_process(config, tmp_path / "postroom.log")
    yield server
    if server.process.poll() is None:
        server.kill()


def _signed_seeds(tmp_path: Path, dns_server: DnsServer) -> list[bytes]:
    """Messages from sender.test with valid signatures, so mutations reach the verifier."""
    keys = KeyRing(tmp_path / "sender-keys")
    for key in (
        keys.generate("sender.test", "r1", "rsa", 1024),
        keys.generate("sender.test", "e1", "ed25519"),
    ):
        dns_server.set(key.record_name, "TXT", record_strings(key.record()))
    message = (
        b"From: Shop <news@sender.test>\r\nTo: app@example.test\r\nSubject: Offers\r\n"
        b"Message-ID: <1@sender.test>\r\n\r\nHello.\r\n"
    )
    return [
        b"".join(s.header for s in DkimSigner(keys).sign(message, PAST, domain="sender.test"))
        + message
    ]


def _connect(server: RunningProcess, role: str, tls: ssl.SSLContext) -> Session:
    sock = socket.create_connection(("127.0.0.1", server.ports[role]), timeout=20)
    if role == "submissions":
        sock = tls.wrap_socket(sock, server_hostname="mail.test")
    session = Session(sock, tls)
    assert session.expect(1)[0].code == 220
    assert session.command(b"EHLO fuzz.test\r\n").code == 250
    if role == "submission":
        assert session.command(b"STARTTLS\r\n").code == 220
        session.start_tls()
        assert session.command(b"EHLO fuzz.test\r\n").code == 250
    if role != "mx":
        plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
        assert session.command(b"AUTH PLAIN " + plain + b"\r\n").code == 235
    return session


def _fuzz_role(
    server: RunningProcess,
    role: str,
    *,
    cases: int,
    rng: random.Random,
    makers: list[Callable[[random.Random], bytes]],
    tls: ssl.SSLContext,
) -> None:
    session: Session | None = None
    for number in range(cases):
        steps = fuzz_case(rng, makers)
        try:
            session = session or _connect(server, role, tls)
            for step in steps:
                session.run(step, rng)
            session.command(b"RSET\r\n")
        except Closed:
            if session is not None:  # None: the connection itself was refused
                session.sock.close()
            session = None
        except AssertionError as failure:
            raise AssertionError(
                f"{role} case {number}: {failure}\nsteps: {steps!r:.3000}"
            ) from None
    if session is not None:
        session.send(b"QUIT\r\n")
        session.sock.close()


def _normal_send(server: RunningProcess, data_dir: Path) -> None:
    message = (
        b"From: app@example.test\r\nTo: app@example.test\r\nSubject: after\r\n\r\nStill here.\r\n"
    )
    context = client_context(data_dir)
    with smtplib.SMTP("127.0.0.1", server.ports["mx"], timeout=20) as mx:
        assert mx.sendmail("a@elsewhere.test", [USER], message) == {}
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=20) as submission:
        submission.starttls(context=context)
        submission.login(USER, PASSWORD)
        assert submission.sendmail(USER, [USER], message) == {}
    with smtplib.SMTP_SSL(
        "127.0.0.1", server.ports["submissions"], timeout=20, context=context
    ) as submissions:
        submissions.login(USER, PASSWORD)
        assert submissions.sendmail(USER, [USER], message) == {}


@pytest.mark.slow
def test_fuzzed_sessions_get_a_reply_for_every_command_and_break_nothing(
    fuzz_server: RunningProcess, dns_server: DnsServer, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    makers = message_bodies(_signed_seeds(tmp_path, dns_server))
    tls = client_context(tmp_path / "data")
    for role, cases in CASES.items():
        _fuzz_role(fuzz_server, role, cases=cases, rng=rng, makers=makers, tls=tls)

    _normal_send(fuzz_server, tmp_path / "data")
    fuzz_server.signal(signal.SIGTERM)
    assert fuzz_server.wait() == 0
    log = fuzz_server.log.read_text(errors="replace")
    stderr = fuzz_server.log.with_suffix(".stderr").read_text(errors="replace")
    assert not _faults(log), _faults(log)
    assert "Traceback" not in stderr, stderr[-4000:]


def _faults(log: str) -> dict[str, int]:
    """Each error line and each traceback's last line (the exception), counted."""
    faults: dict[str, int] = {}
    lines = log.splitlines()
    for number, line in enumerate(lines):
        if " ERROR " in line:
            key = line.split(" ERROR ", 1)[1].split(" client=")[0]
        elif line.startswith("Traceback"):
            following = (ln for ln in lines[number + 1 :] if not ln.startswith((" ", "Trace")))
            key = next(following, "?")[:100]
        else:
            continue
        faults[key] = faults.get(key, 0) + 1
    return faults

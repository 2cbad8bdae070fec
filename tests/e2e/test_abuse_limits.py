"""Abuse limits over real sockets: AUTH throttling under concurrency, slow clients,
local parts that cannot be a mailbox."""

from __future__ import annotations

import base64
import logging
import re
import select
import smtplib
import socket
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from postroom.store.models import UserRecord
from tests.conftest import FakeClock
from tests.support.servers import client_context
from tests.support.thread import MakeServer, ServerThread

RIGHT = "s3cret-pass"
DOCS = Path(__file__).parent.parent.parent / "docs" / "configuration.md"
LOG_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")  # runtime's


def fail2ban_filter() -> re.Pattern[str]:
    """The failregex docs/configuration.md gives fail2ban, as fail2ban reads it."""
    (line,) = [ln for ln in DOCS.read_text().splitlines() if ln.startswith("failregex = ")]
    regex = line.removeprefix("failregex = ").replace("<HOST>", r"(?P<host>\S+)")
    return re.compile(regex)


def fail2ban_hosts(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The host fail2ban finds in each auth line logged, date cut off as fail2ban does."""
    pattern = fail2ban_filter()
    hosts = []
    for record in caplog.records:
        if record.getMessage().startswith("auth "):
            line = LOG_FORMAT.format(record)
            assert "\n" not in line
            match = pattern.search(line.split(" ", 2)[2])  # after the date and time
            assert match, line
            hosts.append(match.group("host"))
    return hosts


def auth_plain(
    srv: ServerThread,
    user: str,
    password: str,
    *,
    source: str = "127.0.0.1",
    barrier: threading.Barrier | None = None,
) -> int:
    """One AUTH PLAIN over implicit TLS on its own connection; the reply code."""
    context = client_context(srv.data_dir)
    with smtplib.SMTP_SSL(
        "localhost",
        srv.ports["submissions"],
        context=context,
        timeout=30,
        source_address=(source, 0),
    ) as client:
        client.ehlo("client.test")
        if barrier is not None:
            barrier.wait(30)  # every connection is ready: the AUTHs go out together
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        code, _ = client.docmd("AUTH", f"PLAIN {token}")
        return code


@pytest.fixture
def accounts(make_server: MakeServer, fake_clock: FakeClock) -> ServerThread:
    srv: ServerThread = make_server(
        clock=fake_clock, limits={"auth": {"max_failures": 5, "max_account_failures": 3}}
    )
    srv.add_domain("example.test")
    srv.add_user("victim@example.test", RIGHT)
    srv.add_user("attacker@example.test", "attackers-own")
    return srv


def test_parallel_auth_from_one_address_gets_at_most_max_failures_checks(
    accounts: ServerThread, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="postroom.smtp")
    passwords = [f"wrong-{n}" for n in range(47)] + [RIGHT]
    barrier = threading.Barrier(len(passwords))
    users = [f"user{n}@example.test" for n in range(47)] + ["victim@example.test"]
    with ThreadPoolExecutor(len(passwords)) as pool:
        codes = Counter(
            pool.map(
                lambda up: auth_plain(accounts, *up, barrier=barrier),
                zip(users, passwords, strict=True),
            )
        )
    assert codes[535] + codes[235] <= 5, codes  # today: {535: 47, 235: 1}
    assert codes[454] >= len(passwords) - 5, codes
    assert set(codes) <= {235, 454, 535}, codes
    # A success forgets only its own account's slot: one more guess fills the limit
    # again if the right password won a slot above. Then it is not even checked.
    assert auth_plain(accounts, "user0@example.test", "wrong") in (535, 454)
    assert auth_plain(accounts, "victim@example.test", RIGHT) == 454
    fake_clock.advance(301)  # the window has passed
    assert auth_plain(accounts, "victim@example.test", RIGHT) == 235
    # One line per failure and per refusal, each naming the client for fail2ban.
    assert fail2ban_hosts(caplog) == ["127.0.0.1"] * (codes[535] + codes[454] + 2)
    assert all("listener=submissions" in r.getMessage() for r in caplog.records)


def test_logging_in_as_yourself_does_not_reset_guesses_at_another_account(
    make_server: MakeServer,
    fake_clock: FakeClock,
) -> None:
    srv: ServerThread = make_server(clock=fake_clock, limits={"auth": {"max_failures": 5}})
    srv.add_domain("example.test")
    srv.add_user("victim@example.test", RIGHT)
    srv.add_user("attacker@example.test", "attackers-own")
    victim: list[int] = []
    own: list[int] = []
    for _ in range(3):  # four guesses, then a login as themself, as in the report
        victim += [auth_plain(srv, "victim@example.test", f"guess-{n}") for n in range(4)]
        own.append(auth_plain(srv, "attacker@example.test", "attackers-own"))
    assert victim == [535] * 5 + [454] * 7
    assert own == [235, 454, 454]
    assert auth_plain(srv, "victim@example.test", RIGHT) == 454


def test_a_distributed_guess_at_one_account_is_throttled(accounts: ServerThread) -> None:
    sources = [f"127.0.0.{n}" for n in range(2, 8)]  # loopback addresses, one guess each
    codes = [auth_plain(accounts, "victim@example.test", "guess", source=s) for s in sources]
    assert codes == [535] * 3 + [454] * 3  # max_account_failures = 3
    # Another account from a fresh address is not affected.
    assert auth_plain(accounts, "attacker@example.test", "attackers-own", source="127.0.0.9") == 235


def test_auth_log_line_cannot_be_forged_by_the_username(
    accounts: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="postroom.smtp")
    forged = 'x"\nWARNING postroom.smtp: auth failed: client=192.0.2.66 account="a" listener=mx'
    assert auth_plain(accounts, forged, "guess") == 535
    assert fail2ban_hosts(caplog) == ["127.0.0.1"]


# -- slow clients ----------------------------------------------------------------------------
class Dribbler:
    """A raw SMTP client that can send a few bytes at a time, stopping as soon as the
    server says something."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        assert self.reply()[0] == 220

    def reply(self) -> tuple[int, bytes]:
        line = self.file.readline()
        while line[3:4] == b"-":
            line = self.file.readline()
        return int(line[:3] or b"0"), line[4:].rstrip()

    def command(self, line: bytes) -> int:
        self.sock.sendall(line + b"\r\n")
        return self.reply()[0]

    def dribble(self, data: bytes, *, gap: float, limit: int) -> int:
        """Send ``data`` one byte per ``gap`` seconds until the server speaks; at most
        ``limit`` bytes. How many bytes went out."""
        for sent in range(min(limit, len(data))):
            readable, _, _ = select.select([self.sock], [], [], gap)
            if readable:
                return sent
            self.sock.sendall(data[sent : sent + 1])
        return min(limit, len(data))

    def closed_by_server(self) -> bool:
        """The server ended the connection: an end of file, or a reset when a byte of
        ours crossed its close (TCP answers data for a closed socket with RST)."""
        try:
            return self.file.readline() == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def slow_limits(make_server: MakeServer) -> ServerThread:
    srv: ServerThread = make_server(
        limits={"command_timeout": 0.5, "min_data_rate": 1000, "data_grace": 0.3}
    )
    srv.add_domain("example.test")
    srv.add_user("app@example.test", RIGHT)
    return srv


def test_a_command_line_trickled_in_hits_the_command_deadline(slow_limits: ServerThread) -> None:
    client = Dribbler(slow_limits.ports["mx"])
    try:
        # Each byte comes well within the deadline; the whole line does not.
        sent = client.dribble(b"NOOP " + b"x" * 100 + b"\r\n", gap=0.1, limit=100)
        assert sent < 100
        code, text = client.reply()
        assert (code, text[:5]) == (421, b"4.4.2")
        assert client.closed_by_server()
    finally:
        client.close()


def test_commands_answered_in_time_each_get_a_fresh_deadline(slow_limits: ServerThread) -> None:
    client = Dribbler(slow_limits.ports["mx"])
    try:
        for _ in range(4):  # 4 x 0.3 s: longer than one deadline, each line within its own
            assert client.dribble(b"NOOP\r\n", gap=0.05, limit=6) == 6
            assert client.reply()[0] == 250
    finally:
        client.close()


def start_transaction(client: Dribbler, recipient: bytes = b"app@example.test") -> None:
    assert client.command(b"EHLO client.test") == 250
    assert client.command(b"MAIL FROM:<a@elsewhere.test>") == 250
    assert client.command(b"RCPT TO:<" + recipient + b">") == 250


def test_data_sent_too_slowly_is_refused_and_not_queued(slow_limits: ServerThread) -> None:
    client = Dribbler(slow_limits.ports["mx"])
    try:
        start_transaction(client)
        assert client.command(b"DATA") == 354
        message = b"Subject: slow\r\n\r\n" + b"x" * 200 + b"\r\n.\r\n"
        assert client.dribble(message, gap=0.05, limit=len(message)) < len(message)
        code, text = client.reply()
        assert (code, text[:5]) == (421, b"4.4.2")
        assert client.closed_by_server()
    finally:
        client.close()
    assert slow_limits.call(slow_limits.store.count_messages()) == 0


def test_bdat_chunks_sent_too_slowly_are_refused_and_not_queued(
    slow_limits: ServerThread,
) -> None:
    client = Dribbler(slow_limits.ports["mx"])
    try:
        start_transaction(client)
        code = 250
        for _ in range(40):  # one octet per chunk: each chunk is quick, the message is not
            client.sock.sendall(b"BDAT 1\r\nx")
            code, text = client.reply()
            if code != 250:
                break
            select.select([client.sock], [], [], 0.05)
        assert (code, text[:5]) == (421, b"4.4.2")
    finally:
        client.close()
    assert slow_limits.call(slow_limits.store.count_messages()) == 0


def test_a_message_at_full_speed_passes_the_rate_limit(slow_limits: ServerThread) -> None:
    client = Dribbler(slow_limits.ports["mx"])
    try:
        start_transaction(client)
        assert client.command(b"DATA") == 354
        client.sock.sendall(b"Subject: fast\r\n\r\n" + b"x" * 70_000 + b"\r\n.\r\n")
        assert client.reply()[0] == 250
    finally:
        client.close()
    assert slow_limits.call(slow_limits.store.count_messages()) == 1


# -- local parts that cannot be a mailbox ------------------------------------------------------
@pytest.mark.parametrize("local", ["a/b", '"../../x"', '".x"', '"a\\\\b"'])
def test_rcpt_to_a_local_part_that_cannot_be_a_mailbox_is_refused(
    accounts: ServerThread, local: str
) -> None:
    # Even a user added before the rule existed: refused now, not accepted and bounced.
    key = f"{local}@example.test"
    accounts.call(accounts.store.add_user(UserRecord(key, "x", (), 0.0)))
    client = Dribbler(accounts.ports["mx"])
    try:
        start_transaction(client, b"victim@example.test")  # the session goes on after
        client.sock.sendall(f"RCPT TO:<{key}>\r\n".encode())
        code, text = client.reply()
        assert (code, text[:5]) == (553, b"5.1.3")
        assert client.command(b"RSET") == 250
    finally:
        client.close()


def test_an_authenticated_client_cannot_send_to_such_a_local_part_either(
    accounts: ServerThread,
) -> None:
    context = client_context(accounts.data_dir)
    with smtplib.SMTP_SSL("localhost", accounts.ports["submissions"], context=context) as client:
        client.login("attacker@example.test", "attackers-own")
        client.mail("attacker@example.test")
        code, text = client.rcpt('"../../../etc/x"@example.test')
        assert (code, text[:5]) == (553, b"5.1.3")
        assert client.rcpt("someone@elsewhere.test")[0] == 250  # other domains: theirs
    assert accounts.call(accounts.store.count_messages()) == 0

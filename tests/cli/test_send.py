"""`postroom send`: a real server process delivers what the command queued, to a loopback
SMTP peer through a route and to a Maildir through the local mailer; `--wait` reports it."""

from __future__ import annotations

import email
import email.policy
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import RunningProcess, make_store, start_process, write_config
from tests.support.smtp_peers import SmtpPeer

USER = pwd.getpwuid(os.getuid()).pw_name


class Setup:
    def __init__(self, directory: Path, peer: SmtpPeer) -> None:
        self.directory = directory
        self.data = directory / "data"
        extra = (
            f'[[mailers]]\nname = "peer"\ntype = "smtp"\nhost = "127.0.0.1"\nport = {peer.port}\n'
            'tls = "none"\ntimeout = 5\n'
            '[[routes]]\nname = "to-peer"\nmailers = ["peer"]\n'
            'conditions = [{ field = "recipient_domain", value = "peer.test" }]\n'
        )
        self.config = write_config(directory / "postroom.toml", self.data, extra=extra)

    def postroom(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "COLUMNS": "200"}
        return subprocess.run(
            [sys.executable, "-m", "postroom", "--config", str(self.config), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )


@pytest.fixture
def peer() -> Iterator[SmtpPeer]:
    rejects = {
        "gone@peer.test": "550 5.1.1 No such user here",
        "later@peer.test": "451 4.3.0 Try again later",
    }
    with SmtpPeer("127.0.0.1", reject_rcpt=rejects) as running:
        yield running


@pytest.fixture
def setup(peer: SmtpPeer) -> Iterator[Setup]:
    # The wake-up socket lives in the data directory: keep its path short (< 108 bytes).
    directory = Path(tempfile.mkdtemp(prefix="pr-", dir="/tmp"))
    yield Setup(directory, peer)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def server(setup: Setup) -> Iterator[RunningProcess]:
    setup.postroom("domain", "add", "example.test").check_returncode()
    setup.postroom("user", "add", "bob@example.test", "--password-stdin", stdin="pw\n")
    process = start_process(setup.config, setup.directory / "postroom.log")
    yield process
    process.signal(15)
    process.wait()


def test_wait_shows_a_delivery_to_a_routed_peer(
    setup: Setup, server: RunningProcess, peer: SmtpPeer, tmp_path: Path
) -> None:
    page = tmp_path / "page.html"
    page.write_text("<p>Hello <b>there</b></p>")
    report = tmp_path / "report.csv"
    report.write_text("a,b\n1,2\n")
    done = setup.postroom(
        "send",
        "--to",
        "alice@peer.test",
        "--from",
        "Shop <shop@example.test>",
        "--subject",
        "Hello",
        "--body",
        "plain words",
        "--html",
        str(page),
        "--attach",
        str(report),
        "--wait",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("queued as ")
    assert "delivered  alice@peer.test" in done.stdout
    assert "250" in done.stdout  # the peer's reply
    [received] = peer.received
    assert (received.sender, received.recipients) == ("shop@example.test", ("alice@peer.test",))
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert message["Subject"] == "Hello"
    assert message.get_body(("plain",)).get_content().strip() == "plain words"  # type: ignore[union-attr]
    assert "<b>there</b>" in message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    [attachment] = message.iter_attachments()
    assert attachment.get_filename() == "report.csv"
    assert attachment.get_content_type() == "text/csv"
    listed = json.loads(setup.postroom("log", "--json").stdout)
    assert listed[0]["source"]["kind"] == "sendmail"
    assert listed[0]["source"]["principal"] == USER


def test_wait_shows_a_bounce_with_the_remote_reply(setup: Setup, server: RunningProcess) -> None:
    done = setup.postroom("send", "--to", "gone@peer.test", "--wait")
    assert done.returncode == 1
    assert "bounced" in done.stdout
    assert "550 5.1.1 No such user here" in done.stdout


def test_wait_says_a_deferral_as_it_happens_and_ends_with_75_at_the_timeout(
    setup: Setup, server: RunningProcess
) -> None:
    done = setup.postroom("send", "--to", "later@peer.test", "--wait", "--timeout", "3")
    assert done.returncode == 75
    lines = done.stdout.splitlines()
    [attempt] = [n for n, line in enumerate(lines) if "later@peer.test  deferred by peer" in line]
    assert "451 4.3.0 Try again later; next attempt at " in lines[attempt]
    assert lines[attempt + 1].startswith("gave up waiting after 3 s; the server keeps trying")
    assert "deferred  later@peer.test" in done.stdout  # then the recipients' states


def test_a_local_user_gets_it_in_the_maildir(setup: Setup, server: RunningProcess) -> None:
    done = setup.postroom("send", "--to", "bob@example.test", "--subject", "to bob", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "delivered  bob@example.test" in done.stdout
    [delivered] = list((setup.data / "mail" / "example.test" / "bob" / "Maildir" / "new").iterdir())
    message = email.message_from_bytes(delivered.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "to bob"
    assert message["From"] == f"{USER}@mail.test"
    assert "A test message from postroom on mail.test." in message.get_content()


def test_without_a_server_wait_ends_at_once(setup: Setup) -> None:
    make_store(setup.config)
    # a timeout longer than the command is given to run: ending at all means at once
    done = setup.postroom("send", "--to", "alice@peer.test", "--wait", "--timeout", "100000")
    assert done.returncode == 75
    assert "no server is running" in done.stdout
    assert "queued  alice@peer.test" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--to", "not an address"), "postroom: --to: not a valid address\n"),
        (("--to", "a@peer.test", "--from", "x@@y"), "postroom: --from: not a valid address\n"),
    ],
)
def test_bad_addresses_are_one_line(setup: Setup, args: tuple[str, ...], message: str) -> None:
    done = setup.postroom("send", *args)
    assert (done.returncode, done.stderr) == (1, message)

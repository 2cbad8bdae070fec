"""POP3 against a real `postroom serve`: poplib, curl and fetchmail, mail sent by SMTP
and delivered by the server's own scheduler, quotas over SMTP, the admin commands."""

from __future__ import annotations

import json
import os
import poplib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

from tests.support.servers import (
    RunningProcess,
    cli_out,
    client_context,
    run_cli,
    smtp_client,
    start_process,
    wait_for,
    write_config,
)

PASSWORD = "pop-pass-1234"
ROLES = {"mx": 0, "pop3": 0, "pop3s": 0}


@dataclass
class Pop3Server:
    config: Path
    data_dir: Path
    process: RunningProcess

    def port(self, role: str) -> int:
        return self.process.ports[role]

    def inbox(self, user: str) -> list[Path]:
        maildir = self.data_dir / "mail" / "example.test" / user / "Maildir"
        return [p for sub in ("new", "cur") for p in (maildir / sub).glob("*")]

    def send(self, user: str, body: bytes) -> None:
        """Through SMTP; back once the server's scheduler has delivered it."""
        before = len(self.inbox(user))
        with smtp_client(self.port("mx")) as client:
            client.sendmail("alice@example.com", [f"{user}@example.test"], body)
        wait_for(lambda: len(self.inbox(user)) > before)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pop3Server]:
    tmp = tmp_path_factory.mktemp("pop3")
    config = write_config(tmp / "postroom.toml", tmp / "data", ports=ROLES)
    cli_out(config, "domain", "add", "example.test")
    for user in ("bob", "curl", "fetch"):
        cli_out(config, "user", "add", f"{user}@example.test", "--password-stdin", stdin=PASSWORD)
    cli_out(config, "user", "add", "small@example.test", "--password-stdin", "--quota", "2K",
            stdin=PASSWORD)  # fmt: skip
    process = start_process(config, tmp / "postroom.log")
    yield Pop3Server(config, tmp / "data", process)
    process.signal(15)
    process.wait()


def message(subject: str, body: str = "Hello.") -> bytes:
    return (
        f"From: alice@example.com\r\nSubject: {subject}\r\n\r\n{body}\r\n.a dotted line\r\n"
    ).encode()


def test_poplib_every_command(server: Pop3Server) -> None:
    server.send("bob", message("one"))
    server.send("bob", message("two"))
    pop = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=10)
    try:
        assert "STLS" in pop.capa()
        pop.stls(client_context(server.data_dir))
        pop.user("bob@example.test")
        pop.pass_(PASSWORD)
        count, size = pop.stat()
        assert count == 2
        _, listing, _ = pop.list()
        assert sum(int(line.split()[1]) for line in listing) == size
        one = cast(bytes, pop.list(2))  # typeshed gives every LIST the multi-line answer's type
        assert one.split()[1:] == listing[1].split()
        _, uids, _ = pop.uidl()
        assert pop.uidl(1).split()[1:] == uids[0].split()
        _, lines, _ = pop.retr(1)
        assert lines[-4:] == [b"Subject: one", b"", b"Hello.", b".a dotted line"]
        _, head, _ = pop.top(2, 0)
        assert b"Subject: two" in head and b"Hello." not in head
        pop.noop()
        pop.dele(1)
        pop.rset()
        pop.dele(1)
        assert pop.quit().startswith(b"+OK")
    finally:
        pop.close()
    again = poplib.POP3_SSL(
        "127.0.0.1", server.port("pop3s"), context=client_context(server.data_dir), timeout=10
    )
    try:
        again.user("bob@example.test")
        again.pass_(PASSWORD)
        _, left, _ = again.uidl()
        assert [line.split()[1] for line in left] == [uids[1].split()[1]]
    finally:
        again.quit()


def _curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "20", *args],
        capture_output=True,
        timeout=30,
        check=False,
    )


def test_curl_reads_over_stls_and_implicit_tls(server: Pop3Server) -> None:
    server.send("curl", message("for curl"))
    cacert = str(server.data_dir / "tls" / "cert.pem")
    login = ["--user", f"curl@example.test:{PASSWORD}", "--cacert", cacert]
    listed = _curl("--ssl-reqd", *login, f"pop3://127.0.0.1:{server.port('pop3')}/")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split(b"\r\n")[0].startswith(b"1 ")
    got = _curl(
        *login, "--login-options", "AUTH=PLAIN", f"pop3s://127.0.0.1:{server.port('pop3s')}/1"
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout.endswith(message("for curl"))
    plain = _curl(
        "--user", f"curl@example.test:{PASSWORD}", f"pop3://127.0.0.1:{server.port('pop3')}/1"
    )
    assert plain.returncode != 0  # no login before TLS


def test_fetchmail_fetches_over_stls(server: Pop3Server, tmp_path: Path) -> None:
    assert shutil.which("fetchmail"), "fetchmail is not installed (.ci/run installs it)"
    server.send("fetch", message("for fetchmail"))
    out = tmp_path / "fetched"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll 127.0.0.1 service {server.port('pop3')} protocol POP3 uidl\n"
        f'  user "fetch@example.test" password "{PASSWORD}"\n'
        f"  sslproto TLS1.2+ sslcertck sslcertfile {server.data_dir / 'tls' / 'cert.pem'}\n"
        # fetchmail matches the name it connects to against the certificate's common name
        # (the hostname), not its 127.0.0.1 subjectAltName.
        "  sslcommonname mail.test\n"
        f"  mda \"/bin/sh -c 'cat >> {out}'\"\n"
    )
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)}
    done = subprocess.run(
        ["fetchmail", "--nodetach", "-f", str(rc)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert b"Subject: for fetchmail" in out.read_bytes()
    assert server.inbox("fetch") == []  # fetched and removed (no --keep)


def test_a_full_mailbox_refuses_at_rcpt_and_at_end_of_data(server: Pop3Server) -> None:
    with smtp_client(server.port("mx")) as client:
        client.ehlo("client.test")
        client.mail("alice@example.com")
        assert client.rcpt("small@example.test")[0] == 250
        code, reply = client.data(message("too big", "x" * 3000))
        assert (code, reply[:5]) == (552, b"5.2.2")
    server.send("small", message("fits", "x" * 1500))
    said = cli_out(server.config, "user", "quota", "small@example.test", "1K")
    assert said.startswith("mailbox of small@example.test: ") and " of 1." in said
    with smtp_client(server.port("mx")) as client:
        client.ehlo("client.test")
        client.mail("alice@example.com")
        code, reply = client.rcpt("small@example.test")
        assert (code, reply[:5]) == (552, b"5.2.2")  # known full at RCPT
    shown = json.loads(cli_out(server.config, "mailbox", "show", "small@example.test", "--json"))
    assert shown["quota"]["limit"] == 1024 and shown["quota"]["usage"] > 1500
    cli_out(server.config, "user", "quota", "small@example.test", "default")  # none by default
    with smtp_client(server.port("mx")) as client:
        client.ehlo("client.test")
        client.mail("alice@example.com")
        assert client.rcpt("small@example.test")[0] == 250


def test_mailbox_list_and_show(server: Pop3Server) -> None:
    server.send("bob", message("listed"))
    listed = json.loads(cli_out(server.config, "mailbox", "list", "--json"))
    bob = next(row for row in listed if row["address"] == "bob@example.test")
    assert bob["inbox"] >= 1
    shown = cli_out(server.config, "mailbox", "show", "bob@example.test")
    assert "INBOX" in shown and "\\Sent" in shown
    missing = run_cli(server.config, "mailbox", "show", "nobody@example.test")
    assert missing.returncode == 1 and missing.stderr.startswith("postroom: no mailbox for")

"""A real `postroom serve` process and real IMAP clients: imaplib through every command
in order, mbsync from isync syncing both ways, curl's imap:// URLs. Mail comes in by
SMTP and goes out by IMAP byte for byte; flags set by IMAP survive a restart."""

from __future__ import annotations

import imaplib
import poplib
import shutil
import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from postroom.config.settings import ListenerRole, ListenerSettings
from tests.support.loops import loop_factory  # noqa: F401 (both loops, for every test)
from tests.support.servers import (
    RunningProcess,
    cli_out,
    client_context,
    make_store,
    start_process,
    wait_for,
    write_config,
)
from tests.support.thread import MakeServer

USER, PASSWORD = "ann@example.test", "ann imap pass"
SENT = (
    b"From: Carol <carol@example.org>\r\nTo: ann@example.test\r\n"
    b"Message-ID: <imap-1@example.org>\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
    b"Subject: byte for byte\r\n\r\n..a dot-stuffed line\r\nend\r\n"
)
PORTS = {"mx": 0, "imap": 0, "imaps": 0}


@dataclass
class Running:
    config: Path
    data_dir: Path
    log: Path
    process: RunningProcess

    @property
    def ports(self) -> dict[str, int]:
        return self.process.ports

    def tls(self) -> ssl.SSLContext:
        return client_context(self.data_dir)

    def login(self) -> imaplib.IMAP4_SSL:
        client = imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps"], ssl_context=self.tls())
        client.login(USER, PASSWORD)
        return client

    def restart(self) -> None:
        self.process.process.terminate()
        self.process.wait()
        self.process = start_process(self.config, self.log)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("imap")
    data_dir = root / "data"
    config = make_store(write_config(root / "postroom.toml", data_dir, ports=PORTS))
    cli_out(config, "domain", "add", "example.test")
    cli_out(config, "user", "add", USER, "--password-stdin", stdin=PASSWORD + "\n")
    log = root / "postroom.log"
    state = Running(config, data_dir, log, start_process(config, log))
    yield state
    state.process.process.terminate()
    state.process.wait()


def _ok(result: tuple[str, Any]) -> Any:
    status, data = result
    assert status == "OK", data
    return data


def _deliver_by_smtp(running: Running, message: bytes = SENT) -> None:
    with smtplib.SMTP("127.0.0.1", running.ports["mx"], timeout=10) as smtp:
        smtp.sendmail("carol@example.org", [USER], message)


def _inbox_count(running: Running) -> int:
    client = running.login()
    try:
        return int(_ok(client.select("INBOX", readonly=True))[0])
    finally:
        client.logout()


def test_smtp_in_imap_out_byte_for_byte_then_every_command(running: Running) -> None:
    before = _inbox_count(running)
    _deliver_by_smtp(running)
    wait_for(lambda: _inbox_count(running) == before + 1)
    client = imaplib.IMAP4("127.0.0.1", running.ports["imap"], timeout=10)
    assert "LOGINDISABLED" in client.capabilities
    client.starttls(ssl_context=running.tls())
    _ok(client.login(USER, PASSWORD))
    _ok(client.capability())
    _ok(client.noop())
    seq = _ok(client.select("INBOX"))[0]
    (fetched, _) = _ok(client.fetch(seq, "(BODY.PEEK[])"))
    stored = fetched[1]
    assert stored.startswith(b"Return-Path: <carol@example.org>\r\nDelivered-To: ")
    assert stored.endswith(SENT)  # dot-unstuffed by SMTP, served as sent
    assert b"\r\nReceived: from " in stored
    _ok(client.fetch(seq, "(UID FLAGS ENVELOPE BODYSTRUCTURE RFC822.SIZE INTERNALDATE)"))
    assert _ok(client.search(None, "SUBJECT", '"byte for byte"')) == [seq]
    _ok(client.store(seq, "+FLAGS", "(\\Flagged)"))
    _ok(client.create("Projects"))
    _ok(client.copy(seq, "Projects"))
    _ok(client.uid("MOVE", "1:*", "Archive"))
    _ok(client.status("Archive", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)"))
    _ok(client.append("Drafts", "(\\Draft)", None, b"Subject: draft\r\n\r\nwip\r\n"))
    _ok(client.subscribe("Projects"))
    _ok(client.lsub())
    _ok(client.unsubscribe("Projects"))
    _ok(client.rename("Projects", "Done"))
    _ok(client.list())
    _ok(client.namespace())
    _ok(client.getquotaroot("INBOX"))
    _ok(client.select("Done"))
    _ok(client.store("1", "+FLAGS", "(\\Deleted)"))
    _ok(client.expunge())
    _ok(client.check())
    _ok(client.unselect())
    _ok(client.select("Archive"))
    _ok(client.close())
    _ok(client.delete("Done"))
    _ok(client.xatom("ID", "NIL"))
    assert client.logout()[0] == "BYE"


def test_flags_set_by_imap_survive_a_restart(running: Running) -> None:
    _deliver_by_smtp(running, SENT.replace(b"imap-1", b"imap-restart"))
    wait_for(lambda: _inbox_count(running) >= 1)
    client = running.login()
    _ok(client.select("INBOX"))
    (uid,) = _ok(client.uid("SEARCH", "HEADER", "Message-ID", "imap-restart"))
    _ok(client.uid("STORE", uid, "+FLAGS", "(\\Answered $Important)"))
    client.logout()
    running.restart()
    client = running.login()
    _ok(client.select("INBOX", readonly=True))
    (flags,) = _ok(client.uid("FETCH", uid, "(FLAGS)"))
    assert b"\\Answered" in flags and b"$Important" in flags
    client.logout()


def test_mbsync_syncs_both_ways(running: Running, tmp_path: Path) -> None:
    mbsync = shutil.which("mbsync")
    assert mbsync is not None, "mbsync (isync) is installed by .ci/run"
    _deliver_by_smtp(running, SENT.replace(b"imap-1", b"imap-mbsync"))
    wait_for(lambda: _inbox_count(running) >= 1)
    local = tmp_path / "local"
    local.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(
        f"IMAPAccount postroom\nHost 127.0.0.1\nPort {running.ports['imap']}\n"
        f'User {USER}\nPass "{PASSWORD}"\nSSLType STARTTLS\n'
        f"CertificateFile {running.data_dir / 'tls' / 'cert.pem'}\n\n"
        "IMAPStore remote\nAccount postroom\n\n"
        f"MaildirStore local\nPath {local}/\nInbox {local}/INBOX\nSubFolders Verbatim\n\n"
        "Channel sync\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\n"
        "Expunge Both\nSync All\nSyncState *\n"
    )

    def sync() -> None:
        done = subprocess.run(
            [mbsync, "-c", str(rc), "-a"], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr

    sync()
    pulled = [p.read_bytes() for p in (local / "INBOX").glob("*/*") if p.is_file()]
    assert any(b"<imap-mbsync@example.org>" in m for m in pulled)
    assert (local / "Sent").is_dir() and (local / "Archive").is_dir()
    # a message made on the near side goes up, to the server's Drafts
    near = local / "Drafts" / "new" / "1.near.local"
    near.write_bytes(b"Subject: from mbsync\nMessage-ID: <near@local>\n\nhello from near\n")
    sync()
    client = running.login()
    _ok(client.select("Drafts", readonly=True))
    assert _ok(client.search(None, "SUBJECT", '"from mbsync"')) != [b""]
    client.logout()


def test_curl_lists_and_fetches_over_imaps(running: Running) -> None:
    curl = shutil.which("curl")
    assert curl is not None
    _deliver_by_smtp(running, SENT.replace(b"imap-1", b"imap-curl"))
    wait_for(lambda: _inbox_count(running) >= 1)
    cert = str(running.data_dir / "tls" / "cert.pem")
    base = f"imaps://127.0.0.1:{running.ports['imaps']}"

    def run(url: str, *extra: str) -> str:
        done = subprocess.run(
            [curl, "-sS", "--cacert", cert, "-u", f"{USER}:{PASSWORD}", *extra, url],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.decode("utf-8", "replace")

    assert "INBOX" in run(base + "/") and "Archive" in run(base + "/")
    found = run(base + "/INBOX", "-X", "SEARCH HEADER Message-ID imap-curl")
    uid_search = run(base + "/INBOX", "-X", "UID SEARCH HEADER Message-ID imap-curl")
    assert found.startswith("* SEARCH") and uid_search.startswith("* SEARCH")
    uid = uid_search.split()[-1]
    body = run(f"{base}/INBOX;UID={uid}")
    assert "Message-ID: <imap-curl@example.org>" in body
    starttls = f"imap://127.0.0.1:{running.ports['imap']}/INBOX;UID={uid}"
    assert "imap-curl" in run(starttls, "--ssl-reqd")


def test_a_message_moved_by_imap_is_seen_by_pop3(make_server: MakeServer) -> None:
    roles = (ListenerRole.POP3, ListenerRole.IMAPS)
    server = make_server(
        listeners=[ListenerSettings(address="127.0.0.1", port=0, role=role) for role in roles]
    )
    server.add_domain("example.test")
    server.add_user(USER, PASSWORD)
    context = client_context(server.data_dir)
    imap = imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=context)
    imap.login(USER, PASSWORD)
    _ok(imap.append("Archive", None, None, SENT))
    _ok(imap.select("Archive"))
    _ok(imap.uid("MOVE", "1", "INBOX"))
    imap.logout()
    pop = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
    pop.stls(context)
    pop.user(USER)
    pop.pass_(PASSWORD)
    count, size = pop.stat()
    assert (count, size) == (1, len(SENT))
    assert b"\r\n".join(pop.retr(1)[1]) + b"\r\n" == SENT
    pop.quit()

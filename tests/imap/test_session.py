"""The IMAP session over a real Maildir, real sockets and TLS, driven by imaplib."""

from __future__ import annotations

import imaplib
import logging
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.imap.harness import ImapHarness

MESSAGE = (
    b"From: Carol <carol@example.org>\r\nTo: ann@example.test\r\nSubject: hello\r\n\r\n"
    b"body line\r\n"
)


def _stored(message: bytes, user: str = "ann") -> bytes:
    """What a message delivered to ``user`` reads back as: the trace fields first."""
    return (
        b"Return-Path: <s@example.org>\r\n"
        + f"Delivered-To: {user}@example.test\r\n".encode()
        + message
    )


def _ok(result: tuple[str, Any]) -> Any:
    status, data = result
    assert status == "OK", data
    return data


def _raw(client: imaplib.IMAP4, command: str) -> list[bytes]:
    """Every line of the answer to ``command``, the tagged one last (imaplib keeps only
    some untagged responses, and raises for some refusals and not others)."""
    tag = client._new_tag()
    client.send(tag + b" " + command.encode() + b"\r\n")
    lines = []
    while True:
        line = client.readline()
        lines.append(line.rstrip(b"\r\n"))
        if line.startswith(tag + b" "):
            lines[-1] = lines[-1][len(tag) + 1 :]
            return lines


def _no(client: imaplib.IMAP4, command: str) -> str:
    """The tagged answer to ``command``, without its tag."""
    return _raw(client, command)[-1].decode()


# -- login and TLS -------------------------------------------------------------------


def test_no_login_before_tls_and_login_after_starttls(imap: ImapHarness) -> None:
    client = imap.connect(starttls=False)
    assert "LOGINDISABLED" in client.capabilities and "STARTTLS" in client.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        client.login("ann@example.test", "ann-pass")
    client.starttls(ssl_context=imap._hostname_free())
    assert "AUTH=PLAIN" in client.capabilities
    _ok(client.login("ann@example.test", "ann-pass"))
    client.logout()


def test_commands_pipelined_behind_starttls_are_discarded(imap: ImapHarness) -> None:
    raw = socket.create_connection(("127.0.0.1", imap.port), timeout=10)
    raw.recv(4096)  # greeting
    raw.sendall(b"a STARTTLS\r\nb LOGIN ann@example.test ann-pass\r\n")
    reply = b""
    while b"\r\n" not in reply:
        reply += raw.recv(4096)
    assert reply.startswith(b"a OK")
    tls = imap._hostname_free().wrap_socket(raw, server_hostname="mail.test")
    tls.sendall(b"c NOOP\r\n")
    answer = b""
    while b"c OK" not in answer:
        answer += tls.recv(4096)
    assert b"b " not in answer  # the injected LOGIN was never read
    tls.sendall(b"d SELECT INBOX\r\n")
    answer = b""
    while b"d " not in answer:
        answer += tls.recv(4096)
    assert b"d BAD" in answer  # still not authenticated
    tls.close()


def test_plaintext_login_only_where_the_listener_allows_it(tmp_path: Path) -> None:
    harness = ImapHarness(tmp_path / "data", plaintext_login=True).start()
    try:
        client = harness.connect(starttls=False)
        _ok(client.login("ann@example.test", "ann-pass"))
        client.logout()
    finally:
        harness.stop()


def test_implicit_tls_listener(tmp_path: Path) -> None:
    harness = ImapHarness(tmp_path / "data", implicit_tls=True).start()
    try:
        client = harness.connect()
        assert "STARTTLS" not in client.capabilities
        _ok(client.login("ann@example.test", "ann-pass"))
        client.logout()
    finally:
        harness.stop()


def test_authenticate_plain(imap: ImapHarness) -> None:
    client = imap.connect()
    _ok(client.authenticate("PLAIN", lambda _: b"\0bob@example.test\0bob-pass"))
    _ok(client.select("INBOX"))
    client.logout()


def test_failed_logins_are_logged_and_throttled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    harness = ImapHarness(tmp_path / "data", max_failures=2).start()
    try:
        client = harness.connect()
        with caplog.at_level(logging.WARNING, logger="postroom.imap"):
            for _ in range(2):
                with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
                    client.login("ann@example.test", "wrong")
            with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
                client.login("ann@example.test", "ann-pass")  # throttled: not even checked
        client.logout()
        lines = [r.getMessage() for r in caplog.records]
        assert 'auth failed: client=127.0.0.1 account="ann@example.test" listener=imap' in lines
        assert 'auth throttled: client=127.0.0.1 account="ann@example.test" listener=imap' in lines
    finally:
        harness.stop()


def test_a_user_sees_only_their_own_mailbox(imap: ImapHarness) -> None:
    imap.deliver(MESSAGE, user="ann")
    bob = imap.login("bob@example.test")
    assert _ok(bob.select("INBOX")) == [b"0"]
    bob.logout()
    ann = imap.login()
    assert _ok(ann.select("INBOX")) == [b"1"]
    ann.logout()


# -- reading -------------------------------------------------------------------------


def test_a_delivered_message_reads_back_byte_for_byte_and_is_then_seen(imap: ImapHarness) -> None:
    imap.deliver(MESSAGE)
    client = imap.login()
    _ok(client.select("INBOX"))
    data = _ok(client.fetch("1", "(BODY.PEEK[] FLAGS)"))
    assert data[0] == (b"1 (BODY[] {%d}" % len(_stored(MESSAGE)), _stored(MESSAGE))
    assert _ok(client.fetch("1", "FLAGS")) == [b"1 (FLAGS ())"]
    body = _ok(client.fetch("1", "(BODY[TEXT])"))
    assert body[0] == (b"1 (BODY[TEXT] {11}", b"body line\r\n")
    assert body[1] == b" FLAGS (\\Seen))"
    partial = _ok(client.uid("FETCH", "1", "(BODY.PEEK[HEADER.FIELDS (Subject)]<0.7>)"))
    assert partial[0] == (b"1 (UID 1 BODY[HEADER.FIELDS (SUBJECT)]<0> {7}", b"Subject")
    client.logout()


def test_fetch_envelope_bodystructure_size_and_date(imap: ImapHarness) -> None:
    imap.deliver(MESSAGE)
    client = imap.login()
    _ok(client.select("INBOX", readonly=True))
    (line,) = _ok(client.fetch("1", "(ENVELOPE BODYSTRUCTURE RFC822.SIZE INTERNALDATE)"))
    assert isinstance(line, bytes)
    assert b'"hello" (("Carol" NIL "carol" "example.org"))' in line
    assert b'BODYSTRUCTURE ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 11 1' in line
    assert b"RFC822.SIZE %d" % len(_stored(MESSAGE)) in line
    assert re.search(rb'INTERNALDATE "\d\d-\w{3}-\d{4} \d\d:\d\d:\d\d \+0000"', line)
    _ok(client.fetch("1", "(RFC822)"))  # read-only: no \Seen
    assert _ok(client.fetch("1", "FLAGS")) == [b"1 (FLAGS ())"]
    client.logout()


def test_search(imap: ImapHarness) -> None:
    imap.deliver(MESSAGE)
    client = imap.login()
    _ok(client.select("INBOX"))
    imap.deliver(b"Subject: other\r\n\r\nsecond body\r\n")
    _ok(client.noop())
    _ok(client.store("2", "+FLAGS", "(\\Flagged)"))
    assert _ok(client.search(None, "SUBJECT", "hello")) == [b"1"]
    assert _ok(client.search("UTF-8", "BODY", "second")) == [b"2"]
    assert _ok(client.search(None, "OR", "FLAGGED", "FROM", "carol")) == [b"1 2"]
    assert _ok(client.search(None, "NOT", "FLAGGED")) == [b"1"]
    assert _ok(client.uid("SEARCH", "UID", "2:*")) == [b"2"]
    esearch = _raw(client, "SEARCH RETURN (MIN COUNT) ALL")
    assert re.fullmatch(rb'\* ESEARCH \(TAG "\w+"\) MIN 1 COUNT 2', esearch[0])
    assert "BADCHARSET" in _no(client, "SEARCH CHARSET KOI8-R ALL")
    client.logout()


# -- changing ------------------------------------------------------------------------


def test_store_copy_move_expunge_with_uidplus(imap: ImapHarness) -> None:
    for _ in range(3):
        imap.deliver(MESSAGE)
    client = imap.login()
    _ok(client.select("INBOX"))
    assert _ok(client.store("1:2", "+FLAGS", "(\\Deleted $Work)")) == [
        b"1 (FLAGS ($Work \\Deleted))",
        b"2 (FLAGS ($Work \\Deleted))",
    ]
    assert _ok(client.store("2", "-FLAGS.SILENT", "($Work)")) == [None]
    assert _ok(client.copy("1", "Archive")) == [
        b"[COPYUID %s 1 1] COPY completed" % _uidvalidity(client, "Archive")
    ]
    typ, _ = client.uid("MOVE", "3", "Trash")
    assert typ == "OK"
    assert client.untagged_responses.get("EXPUNGE") == [b"3"]
    assert _raw(client, "UID EXPUNGE 2") == [b"* 2 EXPUNGE", b"OK EXPUNGE completed"]
    assert _raw(client, "EXPUNGE") == [b"* 1 EXPUNGE", b"OK EXPUNGE completed"]
    assert _ok(client.status("Trash", "(MESSAGES)")) == [b"Trash (MESSAGES 1)"]
    assert "TRYCREATE" in _no(client, "COPY 1 Nowhere")
    client.logout()


def test_read_only_mailboxes_refuse_changes(imap: ImapHarness) -> None:
    imap.deliver(MESSAGE)
    client = imap.login()
    _ok(client.select("INBOX", readonly=True))
    assert "READ-ONLY" in _no(client, "STORE 1 +FLAGS (\\Seen)")
    assert "READ-ONLY" in _no(client, "EXPUNGE")
    client.logout()


def test_close_expunges_and_unselect_does_not(imap: ImapHarness) -> None:
    imap.deliver(MESSAGE)
    imap.deliver(MESSAGE)
    client = imap.login()
    _ok(client.select("INBOX"))
    _ok(client.store("1", "+FLAGS.SILENT", "(\\Deleted)"))
    _ok(client.unselect())
    assert _ok(client.select("INBOX")) == [b"2"]
    _ok(client.store("1", "+FLAGS.SILENT", "(\\Deleted)"))
    _ok(client.close())
    assert _ok(client.select("INBOX")) == [b"1"]
    client.logout()


def test_append_with_flags_date_uidplus_size_and_quota(tmp_path: Path) -> None:
    harness = ImapHarness(tmp_path / "data", quota=2048, max_message_size=3000).start()
    try:
        client = harness.login()
        date = imaplib.Time2Internaldate(time.mktime((2024, 2, 7, 10, 11, 12, 0, 0, -1)))
        result = _ok(client.append("Sent", "(\\Seen)", date, MESSAGE))
        assert re.fullmatch(rb"\[APPENDUID \d+ 1\] APPEND completed", result[0])
        _ok(client.select("Sent"))
        (line,) = _ok(client.fetch("1", "(FLAGS INTERNALDATE BODY.PEEK[])"))[:1]
        assert line[1] == MESSAGE
        assert b"FLAGS (\\Seen)" in line[0] and b'"07-Feb-2024' in line[0]
        big = b"Subject: big\r\n\r\n" + b"x" * 3000 + b"\r\n"
        assert client.append("Sent", None, None, big) == ("NO", [b"[TOOBIG] literal too long"])
        full = b"Subject: s\r\n\r\n" + b"y" * 2000 + b"\r\n"
        assert client.append("Sent", None, None, full) == ("NO", [b"[OVERQUOTA] mailbox is full"])
        assert client.append("Nowhere", None, None, MESSAGE)[1] == [b"[TRYCREATE] no such mailbox"]
        assert _raw(client, "GETQUOTAROOT INBOX") == [
            b'* QUOTAROOT INBOX ""',
            b'* QUOTA "" (STORAGE 1 2)',
            b"OK GETQUOTAROOT completed",
        ]
        client.logout()
    finally:
        harness.stop()


# -- folders -------------------------------------------------------------------------


def test_folders_create_rename_delete_subscribe_list_status(imap: ImapHarness) -> None:
    client = imap.login()
    listed = _ok(client.list())
    assert b'(\\HasNoChildren \\Sent) "/" Sent' in listed
    _ok(client.create("Work/Projects"))
    assert _ok(client.list('""', "Work*")) == [
        b'(\\HasChildren) "/" Work',
        b'(\\HasNoChildren) "/" Work/Projects',
    ]
    assert b'(\\HasChildren) "/" Work' in _ok(client.list('""', "%"))
    assert b'(\\HasNoChildren) "/" Work/Projects' not in _ok(client.list('""', "%"))
    _ok(client.rename("Work/Projects", "Work/Done"))
    _ok(client.subscribe("Work/Done"))
    assert _ok(client.lsub('""', "Work/*")) == [b'(\\HasNoChildren) "/" Work/Done']
    _ok(client.unsubscribe("Work/Done"))
    assert _ok(client.lsub('""', "Work/*")) == [None]
    _ok(client.delete("Work/Done"))
    assert "NONEXISTENT" in _no(client, "SELECT Work/Done")
    assert _raw(client, 'LIST (SPECIAL-USE) "" "*"')[:-1] == [
        b'* LIST (\\HasNoChildren \\Archive) "/" Archive',
        b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts',
        b'* LIST (\\HasNoChildren \\Junk) "/" Junk',
        b'* LIST (\\HasNoChildren \\Sent) "/" Sent',
        b'* LIST (\\HasNoChildren \\Trash) "/" Trash',
    ]
    with_status = _raw(client, 'LIST "" "INBOX" RETURN (STATUS (MESSAGES))')
    assert with_status[1] == b"* STATUS INBOX (MESSAGES 0)"
    (status,) = _ok(client.status("INBOX", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)"))
    assert re.fullmatch(rb"INBOX \(MESSAGES 0 UIDNEXT 1 UIDVALIDITY \d+ UNSEEN 0\)", status)
    client.logout()


def test_namespace_id_enable_and_capability(imap: ImapHarness) -> None:
    client = imap.login()
    assert _ok(client.namespace()) == [b'(("" "/")) NIL NIL']
    typ, _ = client.xatom("ID", '("name" "test")')
    assert typ == "OK" and client.untagged_responses["ID"] == [b'("name" "postroom")']
    typ, _ = client.xatom("ENABLE", "CONDSTORE")
    assert typ == "OK" and client.untagged_responses["ENABLED"] == [b"CONDSTORE"]
    client.logout()


# -- new mail --------------------------------------------------------------------------


def test_idle_is_woken_by_a_delivery(imap: ImapHarness) -> None:
    client = imap.login()
    _ok(client.select("INBOX"))
    tag = client._new_tag()
    client.send(tag + b" IDLE\r\n")
    assert client.readline().startswith(b"+")
    started = time.monotonic()
    imap.deliver(MESSAGE)
    assert client.readline() == b"* 1 EXISTS\r\n"
    assert time.monotonic() - started < 5  # the poll runs each second; generous under load
    client.send(b"DONE\r\n")
    assert client.readline().startswith(tag + b" OK")
    client.logout()


def test_noop_reports_new_mail_and_expunges_by_others(imap: ImapHarness) -> None:
    imap.deliver(MESSAGE)
    first = imap.login()
    second = imap.login()
    _ok(first.select("INBOX"))
    _ok(second.select("INBOX"))
    imap.deliver(MESSAGE)
    _ok(second.store("1", "+FLAGS.SILENT", "(\\Deleted)"))
    _ok(second.expunge())
    first.untagged_responses.clear()
    _ok(first.noop())
    assert first.untagged_responses.get("EXPUNGE") == [b"1"]
    assert first.untagged_responses.get("EXISTS") == [b"1"]
    first.logout()
    second.logout()


def test_flags_survive_a_restart(tmp_path: Path) -> None:
    harness = ImapHarness(tmp_path / "data").start()
    harness.deliver(MESSAGE)
    client = harness.login()
    _ok(client.select("INBOX"))
    _ok(client.store("1", "+FLAGS", "(\\Answered $Label1)"))
    uidvalidity = _uidvalidity(client, "INBOX")
    client.logout()
    harness.stop()
    again = ImapHarness(tmp_path / "data").start()
    try:
        client = again.login()
        _ok(client.select("INBOX"))
        assert _ok(client.fetch("1", "(UID FLAGS)")) == [b"1 (UID 1 FLAGS ($Label1 \\Answered))"]
        assert _uidvalidity(client, "INBOX") == uidvalidity
        client.logout()
    finally:
        again.stop()


def _uidvalidity(client: imaplib.IMAP4, folder: str) -> bytes:
    (status,) = _ok(client.status(folder, "(UIDVALIDITY)"))
    assert isinstance(status, bytes)
    return status.split()[-1].rstrip(b")")


def test_bad_commands_get_bad_and_never_a_traceback(imap: ImapHarness) -> None:
    client = imap.login()
    assert _no(client, "FETCH 1 FLAGS") == "BAD FETCH is not allowed in the authenticated state"
    assert _no(client, "BOGUS") == "BAD unknown command"
    assert _no(client, 'SELECT "unterminated') == "BAD unterminated quoted string"
    client.logout()


def test_a_silent_session_is_logged_out_even_while_idling(tmp_path: Path) -> None:
    harness = ImapHarness(tmp_path / "data", autologout=0.3).start()
    try:
        client = harness.login()
        _ok(client.select("INBOX"))
        tag = client._new_tag()
        client.send(tag + b" IDLE\r\n")
        assert client.readline().startswith(b"+")
        assert client.readline() == b"* BYE autologout; idle for too long\r\n"
        assert client.readline() == b""  # and the connection is closed
        client.shutdown()
    finally:
        harness.stop()

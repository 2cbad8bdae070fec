"""Arbitrary message bytes through intake's commit path, as every entry point uses it.

SMTP (mx with the inbound checks, submission with DKIM signing) goes through
begin / add_recipient / write / commit as the session does; the API, sendmail and DSNs
through ``Intake.submit``. Whatever the bytes, intake must not raise, and the real SQLite
store must hold exactly what was acknowledged: every queued id with its accepted
recipients, nothing for a refusal, and no spool file left open.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postroom.clock import SystemClock
from postroom.config.settings import InboundAuthSettings, Settings
from postroom.directory.users import Users
from postroom.intake import Intake, Principal
from postroom.intake.principals import (
    POSTROOM,
    api_key_principal,
    local_principal,
    user_principal,
)
from postroom.mail.address import Address, parse_address
from postroom.mail.envelope import Recipient, Source, SourceKind
from postroom.mailauth.dkim import DkimSigner, KeyRing, record_strings
from postroom.mailauth.inbound import InboundChecker
from postroom.resolver import DnsResolver
from postroom.smtp.replies import Reply
from postroom.store.models import ApiKeyRecord, UserRecord
from postroom.store.sqlite import SqliteStore
from tests.support.depth import examples
from tests.support.dns_server import DnsServer
from tests.support.fds import open_files_under

USER = "app@example.test"
RECIPIENTS = [USER, "postmaster@example.test", "nobody@example.test", "friend@remote.test"]
SENDERS = ["app@example.test", "news@sender.test", "a@elsewhere.test", "x@other.test", ""]
# Each entry point as its door calls intake: the source, the principal, SMTP or submit().
ENTRY_POINTS = ["smtp-mx", "smtp-submission", "api", "sendmail", "dsn"]
HEADER_NAMES = [
    b"From", b"FROM", b"From ", b"Sender", b"Resent-From", b"To", b"Cc", b"Bcc", b"Subject",
    b"Date", b"Message-ID", b"DKIM-Signature", b"Authentication-Results", b"Content-Type",
    b"Received", b"", b" ", b"\xff", b"X-\x00",
]  # fmt: skip


@dataclass
class Rig:
    runner: asyncio.Runner
    store: SqliteStore
    intake: Intake
    spool_dir: Path
    acknowledged: dict[str, set[str]] = field(default_factory=dict)  # id -> recipients


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("commit")
    keys = KeyRing(root / "data")
    with DnsServer() as dns, asyncio.Runner() as runner:
        key = keys.generate("example.test", "r1", "rsa", 1024)  # mail from our users is signed
        dns.set(key.record_name, "TXT", record_strings(key.record()))
        dns.add("sender.test", "TXT", '"v=spf1 ip4:127.0.0.1 -all"')
        dns.add("_dmarc.sender.test", "TXT", '"v=DMARC1; p=reject"')
        store = SqliteStore(root / "postroom.db")
        runner.run(store.start())
        runner.run(store.add_domain("example.test", 0.0))
        runner.run(Users(store).add(USER, "a-password-1", ()))
        inbound = InboundChecker(InboundAuthSettings(), DnsResolver(dns.settings(0.5)), "mail.test")
        intake = Intake(
            store=store,
            clock=SystemClock(),
            hostname="mail.test",
            spool_dir=root / "spool",
            spool_memory=512,  # larger bodies go to spool files, whose closing is checked
            max_message_size=64 * 1024,
            signer=DkimSigner(keys),
            inbound=inbound,
        )
        try:
            yield Rig(runner, store, intake, root / "spool")
        finally:
            inbound.close()
            runner.run(store.aclose())
            gc.collect()  # anything left unawaited is reported here, not in a later test


# -- messages --------------------------------------------------------------------------------
_endings = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b""])


@st.composite
def header_lines(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(HEADER_NAMES) | st.binary(max_size=12))
    separator = draw(st.sampled_from([b": ", b":", b" : ", b"", b" ", b":\r\n "]))
    value = draw(
        st.sampled_from([b"app@example.test", b"<a@elsewhere.test>", b"", b"=?x?q?=ZZ?="])
        | st.binary(max_size=120)
    )
    return name + separator + value + draw(_endings)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """A header block (often broken), the empty line (or not), and a body."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=4000))
    head = b"".join(draw(st.lists(header_lines(), max_size=8)))
    separator = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n", b""]))
    body = draw(st.binary(max_size=2000) | st.sampled_from([b"Hello.\r\n", b".\r\n", b"\x00"]))
    return head + separator + body


# -- the doors ---------------------------------------------------------------------------------
def _address(text: str) -> Address | None:
    return parse_address(text) if text else None


def _door(entry: str) -> tuple[Source, Principal | None]:
    match entry:
        case "smtp-mx":
            source = Source(SourceKind.SMTP, client_ip="127.0.0.1", helo="c.test", listener="mx")
            return source, None
        case "smtp-submission":
            source = Source(
                SourceKind.SMTP, principal=USER, client_ip="127.0.0.1", listener="submission"
            )
            return source, user_principal(UserRecord(USER, "", (), 0.0))
        case "api":
            key = ApiKeyRecord("key", "", "", ("sender.test",), 0.0)
            return Source(SourceKind.API, principal="key", protocol="HTTP"), api_key_principal(key)
        case "sendmail":
            principal = local_principal("alice", Settings(hostname="mail.test"))
            return Source(SourceKind.SENDMAIL, principal="alice"), principal
        case _:
            return Source(SourceKind.DSN, protocol="local"), POSTROOM


@dataclass(frozen=True)
class Case:
    entry: str
    sender: str
    recipients: list[str]
    data: bytes
    cut: int  # where the body is split in two writes (SMTP)


cases = st.builds(
    Case,
    entry=st.sampled_from(ENTRY_POINTS),
    sender=st.sampled_from(SENDERS),
    recipients=st.lists(st.sampled_from(RECIPIENTS), min_size=1, max_size=3, unique=True),
    data=messages(),
    cut=st.integers(0, 4000),
)


async def _through_smtp(intake: Intake, case: Case) -> tuple[str | None, set[str]]:
    """As the SMTP session calls intake: MAIL, each RCPT, the body in chunks, commit."""
    source, principal = _door(case.entry)
    submission = await intake.begin(source, _address(case.sender), principal=principal)
    if isinstance(submission, Reply):
        return None, set()
    accepted = set()
    for text in case.recipients:
        if (await submission.add_recipient(Recipient(parse_address(text)))).is_positive:
            accepted.add(parse_address(text).key)
    if not accepted:  # the session answers DATA with 554 and never commits
        submission.abort()
        return None, set()
    submission.write(case.data[: case.cut])
    submission.write(case.data[case.cut :])
    reply = await submission.commit()
    return (submission.queue_id, accepted) if reply.is_positive else (None, set())


async def _through_submit(intake: Intake, case: Case) -> tuple[str | None, set[str]]:
    """As the API, sendmail and the scheduler's DSNs call intake: one submit()."""
    source, principal = _door(case.entry)
    sender = None if case.entry == "dsn" else _address(case.sender)
    recipients = [Recipient(parse_address(text)) for text in case.recipients]
    result = await intake.submit(source, sender, recipients, case.data, principal=principal)
    if isinstance(result, Reply):
        return None, set()
    return result.queue_id, {r.address.key for r in recipients}


@settings(
    max_examples=examples(500),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=cases)
def test_any_bytes_commit_or_refuse_and_the_store_holds_exactly_what_was_acknowledged(
    rig: Rig, case: Case
) -> None:
    through = _through_smtp if case.entry.startswith("smtp") else _through_submit
    queue_id, accepted = rig.runner.run(through(rig.intake, case))

    if queue_id is not None:
        rig.acknowledged[queue_id] = accepted
        stored = rig.runner.run(rig.store.message(queue_id))
        assert stored is not None, "acknowledged but not stored"
        assert {parse_address(r.address).key for r in stored.recipients} == accepted
        body = rig.runner.run(rig.store.read_body(queue_id))
        assert body is not None and body.startswith(b"Received: ")
    assert rig.runner.run(rig.store.count_messages()) == len(rig.acknowledged)
    assert open_files_under(rig.spool_dir) == []

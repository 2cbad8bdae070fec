"""Submission: begin -> add_recipient -> write -> commit | abort.

Unknown local users are refused at RCPT (Maddy's delivery-as-transaction), and the
body goes to a SpooledBody as it arrives, so memory stays bounded. Who may send as whom
is checked twice: the envelope sender at ``begin()``, the author fields of the header at
``commit()`` (a null sender too); DKIM then signs only for a From domain the principal
may use.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from postroom.clock import Clock
from postroom.config.settings import Settings
from postroom.errors import StoreError, StoreFull, StoreUnavailable
from postroom.events import Bus, MessageQueued
from postroom.feedback import ReturnDesk
from postroom.feedback.links import links_for
from postroom.ids import new_queue_id
from postroom.intake.cleanup import LineFixer, Rules, clean_header, rules_for
from postroom.intake.handoff import Handoff, Planned
from postroom.intake.marks import Marks, RouteFacts, RouteTracking, marks_for
from postroom.intake.policy import (
    Principal,
    author_domains,
    author_verdict,
    recipient_verdict,
    request_field_refusal,
    sender_verdict,
    suppressed_reply,
)
from postroom.mail.address import Address
from postroom.mail.authors import Authors, read_authors
from postroom.mail.envelope import DsnRequest, Envelope, Recipient, Source, SourceKind
from postroom.mail.events import EventOrigin, EventType, MailEvent, new_event_id
from postroom.mail.headers import received_header
from postroom.mail.labels import LabelProblem, Labels, read_labels
from postroom.mail.spool import SpooledBody
from postroom.mailauth.dkim import DkimSigner, KeyRing
from postroom.mailbox import MailAccount, MailboxStore, Maildir, mailbox_key
from postroom.mailbox.base import Quota
from postroom.smtp import replies
from postroom.smtp.replies import Reply
from postroom.store import DirectoryStore, NewMessage, QueueStore
from postroom.store.base import SuppressionStore
from postroom.store.models import MessageMeta

if TYPE_CHECKING:  # built by the server only when the inbound checks are on (SPF and
    # DMARC need a DNS resolver an accept worker would otherwise load for nothing)
    from postroom.mailauth.inbound import InboundChecker

__all__ = ["Intake", "IntakeStore", "Queued", "Submission"]

_log = logging.getLogger("postroom.intake")
_QUOTA_ACCOUNTS_KEPT: Final = 4096  # accounts RCPT's quota look remembers (then starts over)


class IntakeStore(QueueStore, DirectoryStore, SuppressionStore, Protocol):
    """What intake uses: the queue to commit to, the directory for RCPT's lookups, the
    suppression list for submitted mail."""


@dataclass(frozen=True, slots=True)
class Queued:
    """A message intake has committed durably."""

    queue_id: str
    message_id: str | None  # its Message-ID field's value (added when submitted without)
    meta: MessageMeta  # as stored with it: Message-ID, Subject, tags and metadata


@dataclass(slots=True)
class Intake:
    store: IntakeStore
    clock: Clock
    hostname: str
    spool_dir: Path
    spool_memory: int
    max_message_size: int
    bus: Bus | None = None
    rng: random.Random = field(default_factory=random.Random)  # seeded from the OS
    signer: DkimSigner | None = None  # DKIM-signs mail from our users and postroom itself
    inbound: InboundChecker | None = None  # SPF/DKIM/DMARC on mail from outside (mx)
    # Messages held whole in memory at once for DKIM signing; the rest wait their turn.
    whole_bodies: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(4))
    mailboxes: MailboxStore | None = None  # local users' mailboxes, for their quotas
    returns: ReturnDesk | None = None  # consumes mail to our bounce addresses
    marks: Marks | None = None  # tracking and List-Unsubscribe, when asked
    route_tracking: RouteTracking | None = None  # what [[routes]]' track keys ask
    handoff: Handoff | None = None  # delivers mail at once, once it is durable
    # Told of each store error that intake answers with a 4xx: the scheduler then looks
    # at the store, so /readyz names a lost database even when it had nothing to do.
    store_trouble: Callable[[], object] | None = None
    # RCPT's quota look, per address key: the account (its paths built once; its quota
    # file is read on every look) or None for an address no mailbox can have.
    _quota_accounts: dict[str, MailAccount | None] = field(
        default_factory=dict, init=False, repr=False
    )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: IntakeStore,
        clock: Clock,
        *,
        bus: Bus | None = None,
        inbound: InboundChecker | None = None,
        rng: random.Random | None = None,
        mailboxes: MailboxStore | None = None,
        returns: ReturnDesk | None = None,
        route_tracking: RouteTracking | None,
    ) -> Intake:
        """The intake of the server and of local submission alike: same limits, same
        DKIM keys, so mail is signed whichever way it came in. ``mailboxes``: the
        server's mailbox store (else one on ``<data_dir>/mail``), asked for quotas.
        ``route_tracking``: ``delivery.tracking.route_tracking(settings)``, which intake
        cannot build (delivery sits above it); required, so no door forgets it."""
        return cls(
            store=store,
            clock=clock,
            hostname=settings.hostname,
            spool_dir=settings.data_dir / "spool",
            spool_memory=settings.limits.spool_memory,
            max_message_size=settings.limits.max_message_size,
            bus=bus,
            rng=rng or random.Random(),
            signer=DkimSigner(KeyRing(settings.data_dir)),
            inbound=inbound,
            mailboxes=mailboxes
            or Maildir(settings.data_dir / "mail", default_quota=settings.mailboxes.default_quota),
            returns=returns,
            marks=_marks(settings),
            route_tracking=route_tracking,
        )

    def store_failed(self, reply: Reply = replies.LOCAL_ERROR) -> Reply:
        """``reply`` (451 by default: the client tries again) for a store error, once
        ``store_trouble`` has been told."""
        if self.store_trouble is not None:
            self.store_trouble()
        return reply

    async def submit(
        self,
        source: Source,
        sender: Address | None,
        recipients: Sequence[Recipient],
        data: bytes | SpooledBody,
        *,
        principal: Principal | None = None,
        dsn: DsnRequest | None = None,
        body_type: str = "7BIT",
        smtputf8: bool = False,
        tags: Sequence[str] = (),
        metadata: Sequence[tuple[str, str]] = (),
    ) -> Queued | Reply:
        """One whole message in one call (DSNs, the HTTP API, sendmail, `postroom send`):
        the same policy, clean-up and commit as SMTP; or the reply that refused it.
        ``data``: the message, in memory or spooled (copied chunk by chunk; the caller
        closes it). ``tags`` and ``metadata`` are kept with it and come back in its
        events."""
        size = len(data) if isinstance(data, bytes) else data.size
        submission = await self.begin(
            source,
            sender,
            principal=principal,
            dsn=dsn,
            body_type=body_type,
            smtputf8=smtputf8,
            declared_size=size,
        )
        if isinstance(submission, Reply):
            return submission
        submission.tags, submission.metadata = tuple(tags), tuple(metadata)
        for recipient in recipients:
            reply = await submission.add_recipient(recipient)
            if not reply.is_positive:
                submission.abort()
                return reply
        for chunk in [data] if isinstance(data, bytes) else data.iter_chunks():
            submission.write(chunk)
        reply = await submission.commit()
        if not reply.is_positive:
            return reply
        return Queued(submission.queue_id, submission.message_id, submission.meta)

    async def begin(
        self,
        source: Source,
        sender: Address | None,
        *,
        principal: Principal | None = None,
        dsn: DsnRequest | None = None,
        body_type: str = "7BIT",
        smtputf8: bool = False,
        declared_size: int | None = None,
    ) -> Submission | Reply:
        """A new submission, or the reply that refuses the sender."""
        if declared_size is not None and declared_size > self.max_message_size:
            return replies.MESSAGE_TOO_BIG
        if principal is not None and sender is not None:
            try:
                local = await self.local_among(principal, (sender.ascii_domain,))
            except StoreError:  # the store is away (a lost database): the client retries
                return self.store_failed()
            if (refusal := sender_verdict(principal, sender, local)) is not None:
                return refusal
        rules = rules_for(source, authenticated=principal is not None, hostname=self.hostname)
        return Submission(
            intake=self,
            source=source,
            sender=sender,
            principal=principal,
            dsn=dsn or DsnRequest(),
            body_type=body_type,
            smtputf8=smtputf8,
            queue_id=new_queue_id(self.clock.time(), self.rng),
            body=SpooledBody(self.spool_dir, self.spool_memory),
            rules=rules,
            lines=LineFixer(rules.line_endings),
            declared_size=declared_size,
        )

    async def quota(self, address: Address) -> Quota | None:
        """The quota of a local user's mailbox; None when none applies."""
        if self.mailboxes is None:
            return None
        key = address.key
        try:
            account = self._quota_accounts[key]
        except KeyError:
            try:
                account = self.mailboxes.account(*mailbox_key(key))
            except ValueError:  # no mailbox can have that name (refused with 5.1.3 before)
                account = None
            if len(self._quota_accounts) >= _QUOTA_ACCOUNTS_KEPT:
                self._quota_accounts.clear()
            self._quota_accounts[key] = account
        return None if account is None else await account.limited_quota()

    async def local_among(self, principal: Principal, domains: Iterable[str]) -> frozenset[str]:
        """Which of ``domains`` are local, asked of the store only where the principal's
        rights depend on it (at the time of sending: a domain added later counts)."""
        rights = principal.rights
        wanted = {d for d in domains if rights.needs_lookup(d)}
        return frozenset([d for d in wanted if await self.store.is_local_domain(d)])


@dataclass(slots=True)
class Submission:
    intake: Intake
    source: Source
    sender: Address | None
    principal: Principal | None
    dsn: DsnRequest
    body_type: str
    smtputf8: bool
    queue_id: str
    body: SpooledBody
    rules: Rules  # intake's clean-up for this message's source
    lines: LineFixer
    recipients: list[Recipient] = field(default_factory=list)
    message_id: str | None = None  # known once committed
    # Given at send time (the API's fields, then X-Postroom-Tag/-Metadata), kept with the
    # message for its events.
    tags: tuple[str, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()
    subject: str | None = None  # known once cleaned
    _added: bytes = b""  # fields the clean-up adds (Date, Message-ID), signed and stored
    _head: bytes = b""  # the cleaned header block with its empty line, as stored
    _seen: set[str] = field(default_factory=set)
    _spool_error: OSError | None = None
    _authors: Authors = field(default_factory=Authors)
    _local: frozenset[str] = frozenset()  # the local domains among the authors'
    declared_size: int | None = None  # MAIL FROM's SIZE
    _mailboxes: list[Address] = field(default_factory=list)  # local users with a quota
    _requests: tuple[tuple[str, str], ...] = ()  # X-Postroom-* fields the clean-up took
    returned: bool = False  # the recipients are bounce addresses: the message is consumed
    _local_domains: set[str] = field(default_factory=set)  # RCPT found these local

    async def add_recipient(self, recipient: Recipient) -> Reply:
        address = recipient.address
        returns = self.intake.returns
        # Returned mail is consumed whole, never queued: a transaction is all bounce
        # addresses or none (452 asks the client to send the others apart, RFC 5321
        # 4.5.3.1.10).
        if returns is not None and returns.claims(address):
            if self.recipients and not self.returned:
                return replies.TOO_MANY_RECIPIENTS
            self.returned = True
            self.recipients.append(recipient)
            return replies.RECIPIENT_OK
        if self.returned:
            return replies.TOO_MANY_RECIPIENTS
        store = self.intake.store
        try:
            local, exists = await store.recipient(address.ascii_domain, address.key)
        except StoreError:
            return self.intake.store_failed()
        refusal = recipient_verdict(
            address, principal=self.principal, local_domain=local, user_exists=exists
        )
        if refusal is not None:
            return refusal
        if local:
            self._local_domains.add(address.ascii_domain.lower())
        quota = await self.intake.quota(address) if local and exists else None
        if quota is not None:
            if quota.refuses(self.declared_size or 0):  # full now, or by the size announced
                return replies.MAILBOX_FULL
            self._mailboxes.append(address)
        # A repeated RCPT is accepted once (RFC 5321 3.3 allows either; one copy is kinder).
        if address.key not in self._seen:
            self._seen.add(address.key)
            self.recipients.append(recipient)
        return replies.RECIPIENT_OK

    def write(self, chunk: bytes) -> None:
        self._spool(self.lines.feed(chunk))

    def _spool(self, data: bytes) -> None:
        if self._spool_error is not None or not data:
            return
        try:
            self.body.write(data)
        except OSError as exc:  # the spool's disk is full: refuse at end of data, not now
            self._spool_error = exc

    async def commit(self) -> Reply:
        """Clean up, check the author fields, prepend Received:, enqueue durably; then
        the reply for the client. The spooled body is closed whatever happens."""
        try:
            return await self._commit()
        finally:
            self.body.close()

    async def _divert(self) -> Reply | None:
        """A message to our bounce addresses is consumed here, not queued; one asking for
        tracking or List-Unsubscribe gets its marks (None: it goes on to the queue)."""
        if self.returned and self.intake.returns is not None:
            addresses = [r.address for r in self.recipients]
            return await self.intake.returns.consume(addresses, self.body.getvalue())
        return await self._mark()

    async def _check(self, now: float) -> Reply | None:
        """The clean-up, then the checks of the cleaned header block (the one that is
        stored and sent) and of the whole message: the first refusal, or None."""
        refusal = self._clean(now)
        if refusal is None:
            refusal = await self._check_authors()
        if refusal is None:
            refusal = self._label()
        if refusal is None:
            refusal = await self._check_quotas()
        return refusal

    async def _commit(self) -> Reply:
        now = self.intake.clock.time()
        if (refusal := await self._check(now)) is not None:
            return refusal
        if (diverted := await self._divert()) is not None:
            return diverted
        single = str(self.recipients[0].address) if len(self.recipients) == 1 else None
        header = received_header(
            source=self.source,
            hostname=self.intake.hostname,
            queue_id=self.queue_id,
            now=now,
            for_recipient=single,
        )
        authenticated = await self._authenticate(now)
        if isinstance(authenticated, Reply):
            return authenticated
        header += authenticated + self._added
        try:
            rejected, events = await self._suppressed(now)
        except StoreError:
            return self.intake.store_failed()
        message = NewMessage(
            id=self.queue_id,
            envelope=Envelope(
                sender=self.sender,
                recipients=tuple(self.recipients),
                dsn=self.dsn,
                body=self.body_type,
                smtputf8=self.smtputf8,
            ),
            source=self.source,
            received_at=now,
            header=header,
            body=self.body,
            rejected=rejected,
            events=events,
            meta=self.meta,
        )
        planned = self._hand_off(message)
        if planned is not None:
            message = replace(message, leased=planned.addresses, lease_until=planned.lease_until)
        if (failed := await self._enqueue(message)) is not None:
            return failed
        if planned is not None:
            planned.start()
        self._published(message)
        return replies.queued(self.queue_id)

    async def _enqueue(self, message: NewMessage) -> Reply | None:
        """Commit durably; the reply when that failed."""
        try:
            await self.intake.store.enqueue(message)
        except StoreFull:
            return self.intake.store_failed(replies.STORAGE_FULL)
        except StoreUnavailable:
            return self.intake.store_failed()
        return None

    def _published(self, message: NewMessage) -> None:
        """``MessageQueued``, once the message is durable."""
        if self.intake.bus is None:
            return
        left = len(self.recipients) - len(message.rejected) - len(message.leased)
        self.intake.bus.publish(
            MessageQueued(
                queue_id=self.queue_id,
                source=self.source.kind.value,
                sender=str(self.sender or ""),
                recipients=tuple(str(r.address) for r in self.recipients),
                size=message.size,
                handed_off=left == 0,
            )
        )

    def _hand_off(self, message: NewMessage) -> Planned | None:
        """The recipients the handoff delivers once this commit is durable (only for a
        body held in memory: it is handed over as it is, without a read)."""
        handoff = self.intake.handoff
        if handoff is None or not self.body.in_memory:
            return None
        if handoff.local_only and not self._local_domains:
            return None
        data = message.header + self.body.getvalue()
        return handoff.plan(message, data, frozenset(self._local_domains))

    async def _suppressed(
        self, now: float
    ) -> tuple[tuple[tuple[str, str], ...], tuple[MailEvent, ...]]:
        """Submitted mail: the recipients on the suppression list for this sender (they
        are stored rejected, with their reply), and the events committed with the
        message: ``queued`` for the others, ``rejected`` for them. Mail from outside to
        our users is neither checked nor reported."""
        if self.principal is None:
            return (), ()
        keys = {str(r.address): r.address.key for r in self.recipients}
        addresses = list(keys)
        domain = self.sender.ascii_domain if self.sender is not None else None
        found = await self.intake.store.suppressed(set(keys.values()), domain)
        replies = {a: suppressed_reply(a, found[key]) for a, key in keys.items() if key in found}
        events = tuple(
            MailEvent(
                id=new_event_id(),
                type=EventType.REJECTED if address in replies else EventType.QUEUED,
                at=now,
                recipient=address,
                queue_id=self.queue_id,
                origin=EventOrigin.INTAKE,
                reply=replies.get(address, ""),
                reason="suppressed" if address in replies else "",
            )
            for address in addresses
        )
        return tuple(replies.items()), events

    @property
    def meta(self) -> MessageMeta:
        """What the log, the dashboard and the events know of the message beyond its
        envelope, whichever door it came by."""
        return MessageMeta(self.queue_id, self.message_id, self.subject, self.tags, self.metadata)

    def _label(self) -> Reply | None:
        """Tags and metadata: the API's fields with what X-Postroom-Tag and
        X-Postroom-Metadata add (only submitted mail has them: the clean-up drops a
        stranger's unread), within the API's limits; else 550 5.6.0 naming the field."""
        labels = read_labels(self._requests, Labels(self.tags, self.metadata))
        if isinstance(labels, LabelProblem):
            return request_field_refusal(labels.field, labels.problem)
        self.tags, self.metadata = labels.tags, labels.metadata
        return None

    async def _check_quotas(self) -> Reply | None:
        """552 5.2.2 when the message fits no recipient's mailbox (every recipient is a
        local user whose quota it would pass). When it fits some, it is queued: the
        local mailer bounces it for the others, as the mailbox store refuses it."""
        if not self._mailboxes or len(self._mailboxes) < len(self.recipients):
            return None
        size = self.body.size  # the whole message: header block and body
        for address in self._mailboxes:
            quota = await self.intake.quota(address)
            if quota is None or not quota.refuses(size):
                return None
        return replies.MAILBOX_FULL

    async def _check_authors(self) -> Reply | None:
        """The author fields against the principal's rights (RFC 5322 3.6.2, 3.6.6)."""
        principal = self.principal
        if principal is None:  # mail from outside: the inbound checks judge it
            return None
        self._authors = read_authors(self._head)  # it ends within: clean-up made it so
        try:
            self._local = await self.intake.local_among(principal, author_domains(self._authors))
        except StoreError:
            return self.intake.store_failed()
        return author_verdict(principal, self._authors, self._local)

    async def _authenticate(self, now: float) -> bytes | Reply:
        """Mail authentication at commit: the inbound checks for mail from outside, DKIM
        signing for mail going out (never both). The header fields to prepend, or the
        reply that refuses the message. Signing happens here, once, so every delivery
        attempt sends the same stored signature."""
        intake, source = self.intake, self.source
        inbound = intake.inbound
        if (
            inbound is not None
            and inbound.settings.enabled
            and source.kind is SourceKind.SMTP
            and source.listener == "mx"
            and self.principal is None
            and source.client_ip is not None
        ):
            verdict = await inbound.check(
                self._head,
                size=self.body.size,
                load=self.body.getvalue,
                ip=source.client_ip,
                helo=source.helo or "",
                sender=str(self.sender or ""),
                now=now,
            )
            if verdict.refusal is not None:
                return verdict.refusal
            return verdict.header
        # Only mail from a principal (our users, keys, local users, trusted networks, and
        # postroom itself) is signed, and only as a From: domain it may use: mail from
        # outside that claims our domain in From: must not get our signature.
        signer, principal = intake.signer, self.principal
        domain = self._authors.domain_of("From")
        if (
            signer is None
            or principal is None
            or domain is None
            or not principal.rights.allows(domain, self._local)
            or not signer.wants(domain)
        ):
            return b""
        async with intake.whole_bodies:  # DKIM needs the message whole: a few at a time
            data = self._added + self.body.getvalue()
            if len(data) <= _INLINE_SIGNING and signer.ready(domain):
                # On the loop's thread: the hop to a thread and back, and that thread's
                # Python contending with the loop's for the GIL, cost more than signing
                # a small message (0.34 ms a message less with an RSA key, measured).
                signatures = signer.sign(data, now, domain=domain)
            else:
                signatures = await asyncio.to_thread(signer.sign, data, now, domain=domain)
        return b"".join(s.header for s in signatures)

    def _clean(self, now: float) -> Reply | None:
        """Intake's clean-up (``cleanup.py``) over the spooled message: line endings
        finished, the header block cleaned (rewritten only when something was removed
        or it was malformed), Date and Message-ID kept to prepend. A refusal, or None."""
        self._spool(self.lines.finish())
        if self._spool_error is not None:
            return replies.STORAGE_FULL
        if (refusal := self.lines.refusal) is not None:
            return refusal
        start = _header_block(self.body)
        cleaned = clean_header(start, self.rules, now=now, queue_id=self.queue_id)
        if cleaned.head is not None:
            try:
                self._replace_head(cleaned.consumed, cleaned.head)
            except OSError:
                return replies.STORAGE_FULL
        self._head = start[: cleaned.consumed] if cleaned.head is None else cleaned.head
        self._added = cleaned.added
        self._requests = cleaned.requests
        self.message_id = cleaned.message_id
        self.subject = cleaned.subject
        return None

    async def _mark(self) -> Reply | None:
        """Tracking and List-Unsubscribe, when the message or the settings ask, before
        DKIM signs (a refusal for a request field we do not understand)."""
        marks = self.intake.marks
        # Mail from outside is not ours to mark; postroom's own (DSNs, alerts) never is.
        if marks is None or self.principal is None or self.source.kind is SourceKind.DSN:
            return None
        asked = marks.asked(self._requests)
        if isinstance(asked, Reply):
            return asked
        recipients = [str(r.address) for r in self.recipients]
        sender_domain = self.sender.ascii_domain if self.sender is not None else ""
        self._added += marks.unsubscribe_fields(asked, self.queue_id, recipients, sender_domain)
        routes = self.intake.route_tracking if asked.tracking is None else None
        if routes is None and not marks.tracking(asked, ()):
            return None  # the usual case: nothing asks, and the body is not read
        async with self.intake.whole_bodies:
            data = self.body.getvalue()
            routed = () if routes is None else await asyncio.to_thread(routes, self._facts(data))
            tracking = marks.tracking(asked, routed)
            if not tracking:
                return None
            tracked = await asyncio.to_thread(
                marks.track, tracking, self.queue_id, recipients, data
            )
        if tracked is not None:
            try:
                self._replace_head(self.body.size, tracked)
            except OSError:
                return replies.STORAGE_FULL
        return None

    def _facts(self, data: bytes) -> RouteFacts:
        return RouteFacts(
            queue_id=self.queue_id,
            sender=str(self.sender or ""),
            principal=self.source.principal,
            source_kind=self.source.kind.value,
            recipients=tuple(str(r.address) for r in self.recipients),
            data=data,
        )

    def _replace_head(self, old_length: int, head: bytes) -> None:
        """The body with its header block replaced, copied chunk by chunk."""
        body = SpooledBody(self.intake.spool_dir, self.intake.spool_memory)
        try:
            body.write(head)
            skip = old_length
            for chunk in self.body.iter_chunks():
                if skip >= len(chunk):
                    skip -= len(chunk)
                    continue
                body.write(chunk[skip:])
                skip = 0
        except BaseException:
            body.close()
            raise
        self.body.close()
        self.body = body

    @property
    def size(self) -> int:
        return self.body.size

    def abort(self) -> None:
        self.body.close()


_MAX_HEADER_BLOCK = 1024 * 1024  # the checks read at most this much of the header
# Messages up to this size are DKIM-signed on the event loop's thread once the keys are
# parsed: 0.5-0.7 ms of the loop's time for 4 KiB with an RSA 2048 key, about 1.3 ms at
# this size. Larger ones, and the first signature with a key (parsing it costs more), go
# to a worker thread.
_INLINE_SIGNING = 16 * 1024


def _header_block(body: SpooledBody) -> bytes:
    """The message's header fields and the empty line after them (at most 1 MiB)."""
    head = b""
    for chunk in body.iter_chunks(64 * 1024):
        head += chunk
        end = head.find(b"\r\n\r\n")
        if end >= 0:
            return head[: end + 4]
        if len(head) >= _MAX_HEADER_BLOCK:
            break
    return head[:_MAX_HEADER_BLOCK]


def _marks(settings: Settings) -> Marks | None:
    """Tracking and List-Unsubscribe, with the data directory's token key; None where
    the key cannot be read (``postroom-sendmail`` run by a user who may queue mail but
    not read the key): such mail is sent unmarked, and the server's own intake, which
    made the key, marks all it takes."""
    try:
        return marks_for(settings, links_for(settings))
    except OSError as exc:
        _log.warning("tracking and List-Unsubscribe are off here: %s", exc)
        return None

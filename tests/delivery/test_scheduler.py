"""The scheduler with a real SQLite store and intake, scripted mailers and a fake clock."""

from __future__ import annotations

import asyncio
import email
import email.policy
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from postroom.config.settings import Settings
from postroom.delivery.localdomains import LocalDomains
from postroom.delivery.mailers import Mailer
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Disposition, Outcome, RemoteInfo
from postroom.delivery.router import Router, RouteTable
from postroom.delivery.scheduler import Scheduler
from postroom.events import Bus, DeliveryAttempt
from postroom.intake import ANY_SENDER, Intake, Principal, Queued
from postroom.mail.address import parse_address
from postroom.mail.envelope import Notify, Recipient, Source, SourceKind
from postroom.smtp.replies import Reply
from postroom.store import RecipientStatus, Store, open_store
from postroom.store.models import Claim
from postroom.store.sqlite import SqliteStore
from tests.conftest import FakeClock
from tests.support.smtp_peers import eventually

OK = Reply(250, "2.0.0", "Ok: queued as REMOTE1")
GREYLISTED = Reply(451, "4.7.1", "Greylisted, try again later")
NO_SUCH = Reply(550, "5.1.1", "No such user")


@dataclass
class Scripted:
    """A real Mailer whose replies come from a script: recipient -> list of replies."""

    name: str
    script: dict[str, list[Reply]] = field(default_factory=dict)
    default: Reply = OK
    failover: bool = True
    seen: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    async def deliver(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> list[Outcome]:
        self.seen.append((message.id, tuple(r.address for r in recipients)))
        outcomes = []
        for rcpt in recipients:
            queue = self.script.get(rcpt.address)
            reply = queue.pop(0) if queue else self.default
            disposition = {2: Disposition.DELIVERED, 4: Disposition.DEFERRED}.get(
                reply.code // 100, Disposition.BOUNCED
            )
            outcomes.append(
                Outcome(
                    rcpt.address,
                    disposition,
                    reply,
                    RemoteInfo(mailer=self.name, host=f"{self.name}.remote.test", ip="192.0.2.1"),
                    failover=self.failover and disposition is Disposition.DEFERRED,
                )
            )
        return outcomes

    async def aclose(self) -> None:
        return None


@dataclass
class World:
    store: Store
    clock: FakeClock
    scheduler: Scheduler
    intake: Intake
    primary: Scripted
    backup: Scripted
    events: list[object]

    async def submit(self, sender: str, *rcpts: str, notify: str | None = None) -> str:
        notify_set = frozenset(Notify(n) for n in notify.split(",")) if notify else None
        result = await self.intake.submit(
            Source(kind=SourceKind.SMTP, principal="app@example.test", protocol="ESMTPA"),
            parse_address(sender) if sender else None,
            [Recipient(parse_address(r), notify_set) for r in rcpts],
            b"From: app@example.test\r\nSubject: Receipt 42\r\n\r\nThanks.\r\n",
            principal=Principal("app@example.test", ANY_SENDER),
        )
        assert isinstance(result, Queued), result
        return result.queue_id

    async def dsns(self) -> list[email.message.EmailMessage]:
        found: list[email.message.EmailMessage] = []
        for message in await self.store.messages(limit=1000):
            if message.source_kind == "dsn":
                data = await self.store.read_body(message.id)
                assert data is not None
                found.append(email.message_from_bytes(data, policy=email.policy.default))
        return found


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    made = await make_world(tmp_path)
    yield made
    await made.store.aclose()


async def make_world(
    tmp_path: Path,
    primary: Scripted | None = None,
    *,
    route_to: Mailer | None = None,  # delivers as "primary" instead of the scripted one
    store: Store | None = None,
    **delivery: object,
) -> World:
    settings = Settings.model_validate(
        {
            "hostname": "mail.test",
            "delivery": delivery,
            "data_dir": tmp_path,
            "mailers": [
                {"name": "primary", "type": "smtp", "host": "primary.remote.test"},
                {"name": "backup", "type": "smtp", "host": "backup.remote.test"},
            ],
            "routes": [
                {
                    "name": "receipts",
                    "mailers": ["primary", "backup"],
                    "conditions": [
                        {"field": "subject", "operator": "contains", "value": "Receipt"}
                    ],
                }
            ],
        }
    )
    store = store or await open_store(f"sqlite:///{tmp_path / 'q.db'}")
    clock = FakeClock()
    bus = Bus()
    events: list[object] = []
    bus.subscribe(events.append)
    intake = Intake(
        store=store,
        clock=clock,
        hostname="mail.test",
        spool_dir=tmp_path,
        spool_memory=1 << 20,
        max_message_size=1 << 24,
        bus=bus,
    )
    primary, backup = primary or Scripted("primary"), Scripted("backup")
    local_domains = LocalDomains()
    scheduler = Scheduler(
        store=store,
        router=Router({"primary": route_to or primary, "backup": backup, "mx": Scripted("mx")}),
        routes=RouteTable.from_settings(settings, local_domains),
        intake=intake,
        local_domains=local_domains,
        settings=settings.delivery,
        hostname="mail.test",
        clock=clock,
        bus=bus,
        rng=random.Random(7),
    )
    return World(store, clock, scheduler, intake, primary, backup, events)


async def status_of(world: World, queue_id: str) -> dict[str, RecipientStatus]:
    message = await world.store.message(queue_id)
    assert message is not None
    return {r.address: r.status for r in message.recipients}


async def test_delivered_on_first_attempt(world: World) -> None:
    queue_id = await world.submit("app@example.test", "a@remote.test", "b@remote.test")
    assert await world.scheduler.run_once() == 1
    assert await status_of(world, queue_id) == {
        "a@remote.test": RecipientStatus.DELIVERED,
        "b@remote.test": RecipientStatus.DELIVERED,
    }
    # all recipients of the message went in one call to the primary
    assert world.primary.seen == [(queue_id, ("a@remote.test", "b@remote.test"))]
    attempts = await world.store.attempts(queue_id)
    assert [(a.recipient, a.mailer, a.code) for a in attempts] == [
        ("a@remote.test", "primary", 250),
        ("b@remote.test", "primary", 250),
    ]
    logged = [e for e in world.events if isinstance(e, DeliveryAttempt)]
    assert {e.status for e in logged} == {"delivered"}
    assert await world.dsns() == []  # no success DSN unless NOTIFY asks


async def test_failover_to_backup_in_the_same_attempt(world: World) -> None:
    world.primary.default = GREYLISTED
    queue_id = await world.submit("app@example.test", "a@remote.test")
    await world.scheduler.run_once()
    assert await status_of(world, queue_id) == {"a@remote.test": RecipientStatus.DELIVERED}
    attempts = await world.store.attempts(queue_id)
    assert [(a.mailer, a.disposition) for a in attempts] == [
        ("primary", "deferred"),
        ("backup", "delivered"),
    ]


async def test_deferred_then_retried_with_backoff(world: World) -> None:
    world.primary.script["a@remote.test"] = [GREYLISTED]
    world.backup.default = GREYLISTED
    world.backup.script["a@remote.test"] = [GREYLISTED]
    queue_id = await world.submit("app@example.test", "a@remote.test")
    await world.scheduler.run_once()
    message = await world.store.message(queue_id)
    assert message is not None
    (rcpt,) = message.recipients
    assert rcpt.status is RecipientStatus.DEFERRED
    assert rcpt.next_attempt_at is not None
    wait = rcpt.next_attempt_at - world.clock.now
    assert 270 <= wait <= 330  # first retry after 5 minutes, with jitter
    world.clock.advance(wait / 2)
    assert await world.scheduler.run_once() == 0  # not due yet
    world.clock.advance(wait)
    world.backup.default = OK
    assert await world.scheduler.run_once() == 1
    assert await status_of(world, queue_id) == {"a@remote.test": RecipientStatus.DELIVERED}


async def test_paused_delivery_claims_nothing_and_an_unpaused_start_delivers(
    tmp_path: Path,
) -> None:
    paused = await make_world(tmp_path, paused=True)
    try:
        queue_id = await paused.submit("app@example.test", "a@remote.test")  # accepted
        running = asyncio.create_task(paused.scheduler.run())
        paused.scheduler.wake()  # as a queue command or a new message does
        paused.clock.advance(3600)
        assert await paused.scheduler.run_once() == 0
        await asyncio.sleep(0)
        assert not running.done()
        await paused.scheduler.stop(grace=1)
        async with asyncio.timeout(5):  # a bound, not a speed: stop() ends the pause
            await running
        assert paused.primary.seen == [] and paused.backup.seen == []
        assert await status_of(paused, queue_id) == {"a@remote.test": RecipientStatus.QUEUED}
    finally:
        await paused.store.aclose()

    restarted = await make_world(tmp_path)  # the same store, delivery.paused unset
    try:
        assert await restarted.scheduler.run_once() == 1
        assert await status_of(restarted, queue_id) == {"a@remote.test": RecipientStatus.DELIVERED}
    finally:
        await restarted.store.aclose()


async def test_permanent_failure_bounces_with_a_dsn(world: World) -> None:
    world.primary.script["bad@remote.test"] = [NO_SUCH]
    queue_id = await world.submit("app@example.test", "bad@remote.test", "good@remote.test")
    await world.scheduler.run_once()
    assert await status_of(world, queue_id) == {
        "bad@remote.test": RecipientStatus.BOUNCED,
        "good@remote.test": RecipientStatus.DELIVERED,
    }
    # a bounce does not fail over to the backup
    assert world.backup.seen == []
    (dsn,) = await world.dsns()
    assert dsn.get_content_type() == "multipart/report"
    assert dsn["To"] == "app@example.test"
    status_part = next(p for p in dsn.walk() if p.get_content_type() == "message/delivery-status")
    text = status_part.as_string()
    assert "Final-Recipient: rfc822; bad@remote.test" in text
    assert "Action: failed" in text
    assert "Status: 5.1.1" in text
    assert "good@remote.test" not in text
    dsn_row = next(m for m in await world.store.messages(limit=100) if m.source_kind == "dsn")
    assert dsn_row.sender == ""  # from the null sender


async def test_expiry_bounces_with_4_4_7(world: World) -> None:
    world.primary.default = GREYLISTED
    world.backup.default = GREYLISTED
    queue_id = await world.submit("app@example.test", "slow@remote.test")
    for _ in range(200):
        await world.scheduler.run_once()
        message = await world.store.message(queue_id)
        assert message is not None
        if message.recipients[0].status is RecipientStatus.EXPIRED:
            break
        next_at = message.recipients[0].next_attempt_at
        assert next_at is not None
        world.clock.now = next_at
    assert await status_of(world, queue_id) == {"slow@remote.test": RecipientStatus.EXPIRED}
    assert message is not None
    assert world.clock.now - message.received_at >= 5 * 86400
    dsns = await world.dsns()
    kinds = [d["Subject"] for d in dsns]
    assert kinds.count("Delayed Mail (still being retried)") == 1  # one delay warning
    failure = next(d for d in dsns if "Undelivered" in d["Subject"])
    assert "Status: 4.4.7" in failure.as_string()


async def test_null_sender_never_gets_a_bounce(world: World) -> None:
    world.primary.default = NO_SUCH
    await world.submit("", "bad@remote.test")
    await world.scheduler.run_once()
    assert await world.dsns() == []


async def test_success_notice_when_notify_asks(world: World) -> None:
    await world.submit("app@example.test", "a@remote.test", notify="SUCCESS")
    await world.scheduler.run_once()
    (dsn,) = await world.dsns()
    assert "Action: delivered" in dsn.as_string()


@dataclass
class Gated(Scripted):
    """Deliveries wait for ``gate``; ``active``/``most`` count them in flight."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    active: int = 0
    most: int = 0

    async def deliver(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> list[Outcome]:
        self.active += 1
        self.most = max(self.most, self.active)
        await self.gate.wait()
        self.active -= 1
        return await super().deliver(message, recipients)


async def test_bytes_in_flight_are_bounded(tmp_path: Path) -> None:
    gated = Gated("primary")
    world = await make_world(tmp_path, gated, max_inflight_bytes=1024 * 1024)
    try:
        big = b"Subject: Receipt\r\n\r\n" + b"x" * 700_000 + b"\r\n"
        for _ in range(3):
            result = await world.intake.submit(
                Source(kind=SourceKind.SMTP),
                parse_address("app@example.test"),
                [Recipient(parse_address("a@remote.test"))],
                big,
                principal=Principal("app@example.test", ANY_SENDER),
            )
            assert isinstance(result, Queued)
        running = asyncio.create_task(world.scheduler.run_once())
        # Let every claimed attempt reach the budget or the mailer (the store's reads run
        # on threads, so this waits on the loop rather than counting its turns).
        await asyncio.sleep(0.1)
        assert gated.active == 1  # 700 KB each, 1 MiB budget: one at a time
        gated.gate.set()
        assert await running == 3
        assert gated.most == 1
    finally:
        await world.store.aclose()


@dataclass
class OneByOne(Scripted):
    """Each delivery waits for its turn: ``finish()`` lets the oldest waiting one end."""

    turns: list[asyncio.Future[None]] = field(default_factory=list)

    async def deliver(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> list[Outcome]:
        turn = asyncio.get_running_loop().create_future()
        self.turns.append(turn)
        await turn
        return await super().deliver(message, recipients)

    def finish(self) -> None:
        self.turns.pop(0).set_result(None)


class ClaimsSeen(SqliteStore):
    """The store, noting how many messages each claim asked for."""

    asked: list[int]

    async def claim_due(self, now: float, *, limit: int, lease: float) -> list[Claim]:
        self.asked.append(limit)
        return await super().claim_due(now, limit=limit, lease=lease)


async def test_with_mail_left_over_a_claim_waits_for_a_tenth_of_the_slots(
    tmp_path: Path,
) -> None:
    mailer = OneByOne("primary")
    store = ClaimsSeen(tmp_path / "q.db")
    store.asked = []
    await store.start()
    world = await make_world(tmp_path, mailer, store=store, max_concurrency=20)
    try:
        for _ in range(25):
            await world.submit("app@example.test", "a@remote.test")
        running = asyncio.create_task(world.scheduler.run())
        await eventually(lambda: len(mailer.turns) == 20)
        assert store.asked == [20]  # five are left over
        mailer.finish()
        await eventually(lambda: world.scheduler.in_flight == 19)
        mailer.finish()  # now two are free: a tenth of 20
        await eventually(lambda: len(mailer.turns) == 20)
        assert store.asked == [20, 2]
        async with asyncio.timeout(5):  # the three left, claimed as slots free
            while len(mailer.seen) < 25 or mailer.turns:
                if mailer.turns:
                    mailer.finish()
                await asyncio.sleep(0.005)  # the store's claims run on its threads
        await world.scheduler.stop(1.0)
        await running
    finally:
        await world.store.aclose()

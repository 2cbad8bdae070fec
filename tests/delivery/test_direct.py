"""Mail delivered at once by the accepting process: a real SQLite store, intake, the
local mailer into a real Maildir, the smtp mailer to a loopback relay, the scheduler
beside them, and a fake clock."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from postroom.config.mailers import LocalMailerSettings, SmtpMailerSettings
from postroom.config.settings import Settings
from postroom.delivery.direct import DirectDelivery
from postroom.delivery.localdomains import LocalDomains
from postroom.delivery.mailers import Mailer
from postroom.delivery.mailers.mta.local import LocalMailer
from postroom.delivery.mailers.mta.relay import SmtpMailer
from postroom.delivery.outcome_events import relay_names
from postroom.delivery.router import Route, Router, RouteTable
from postroom.delivery.scheduler import Scheduler
from postroom.delivery.settle import OutcomeRules
from postroom.errors import StoreError, StoreUnavailable
from postroom.events import Bus, DeliveryAttempt, MessageQueued
from postroom.intake import ANY_SENDER, Intake, Principal, Queued
from postroom.mail.address import parse_address
from postroom.mail.envelope import Notify, Recipient, Source, SourceKind
from postroom.mail.events import EventType, MailEvent
from postroom.mailbox import Maildir, MailDrop
from postroom.mailbox.base import QuotaExceeded
from postroom.store import RecipientStatus, Store, open_store
from postroom.store.models import Attempt, RecipientUpdate, UserRecord
from tests.conftest import FakeClock
from tests.support.faulty_store import FaultyStore
from tests.support.smtp_peers import Peers, SmtpPeer, eventually

MESSAGE = b"From: someone@remote.test\r\nSubject: Hello\r\n\r\nHi there\r\n"


class FullMailbox:
    """A mailbox store that refuses every delivery as over quota."""

    async def deliver(
        self, domain: str, user: str, data: bytes, *, sender: str, recipient: str
    ) -> str:
        raise QuotaExceeded("full")


@dataclass
class World:
    store: Store
    clock: FakeClock
    intake: Intake
    direct: DirectDelivery
    scheduler: Scheduler
    events: list[object]
    wakes: list[None]
    root: Path
    mailers: dict[str, Mailer]  # the direct path's, the scheduler's too

    async def submit(self, *rcpts: str, notify: str | None = None) -> str:
        wanted = frozenset(Notify(n) for n in notify.split(",")) if notify else None
        result = await self.intake.submit(
            Source(kind=SourceKind.SMTP, protocol="ESMTP", listener="mx"),
            parse_address("someone@remote.test"),
            [Recipient(parse_address(r), wanted) for r in rcpts],
            MESSAGE,
        )
        assert isinstance(result, Queued), result
        return result.queue_id

    def files(self, user: str) -> list[Path]:
        new = self.root / "example.test" / user / "Maildir" / "new"
        return sorted(new.iterdir()) if new.is_dir() else []

    async def settled(self) -> None:
        await self.direct.stop(10.0)


async def make_world(
    tmp_path: Path,
    *,
    mailbox: MailDrop | None = None,
    routes: list[dict[str, object]] | None = None,
    store: Store | None = None,
    relays: list[dict[str, object]] | None = None,
    **delivery: object,
) -> World:
    settings = Settings.model_validate(
        {
            "hostname": "mail.test",
            "data_dir": tmp_path,
            "mailers": [
                {"name": "local", "type": "local"},
                {"name": "mx", "type": "mx"},
                *(relays or []),
            ],
            "routes": routes or [],
            "delivery": delivery,
        }
    )
    store = store or await open_store(f"sqlite:///{tmp_path / 'q.db'}")
    clock = FakeClock()
    await store.add_domain("example.test", clock.time())
    for user in ("ann", "bob"):
        await store.add_user(UserRecord(f"{user}@example.test", "x", (), clock.time()))
    bus = Bus()
    events: list[object] = []
    bus.subscribe(events.append)
    root = tmp_path / "mail"
    maildir = Maildir(root, clock=clock)
    intake = Intake(
        store=store,
        clock=clock,
        hostname="mail.test",
        spool_dir=tmp_path,
        spool_memory=1 << 20,
        max_message_size=1 << 24,
        bus=bus,
        mailboxes=maildir,
    )
    drop = mailbox or maildir
    local = LocalMailer(
        LocalMailerSettings(name="local"), data_dir=tmp_path, clock=clock, mailbox=drop
    )
    wakes: list[None] = []
    rules = OutcomeRules(
        suppressions=store,
        intake=intake,
        settings=settings.delivery,
        hostname="mail.test",
        clock=clock,
        rng=random.Random(7),
        bus=bus,
        relays=relay_names(settings.mailers),
    )
    at_once: dict[str, Mailer] = {"local": local}
    for m in settings.mailers:
        if isinstance(m, SmtpMailerSettings):
            at_once[m.name] = SmtpMailer(m, hostname="mail.test", clock=clock)
    direct = DirectDelivery(
        store=store,
        routes=[Route.from_settings(r) for r in settings.routes],
        mailers=at_once,
        rules=rules,
        settings=settings.delivery,
        clock=clock,
        bus=bus,
        wake=lambda: wakes.append(None),
        store_pause=0.001,
    )
    intake.handoff = direct
    local_domains = LocalDomains()
    mailers = dict(at_once)  # the scheduler's are the same: one pool per relay
    scheduler = Scheduler(
        store=store,
        router=Router(mailers),
        routes=RouteTable.from_settings(settings, local_domains),
        intake=intake,
        local_domains=local_domains,
        settings=settings.delivery,
        hostname="mail.test",
        clock=clock,
        bus=bus,
        rng=random.Random(7),
        relays=relay_names(settings.mailers),
    )
    return World(store, clock, intake, direct, scheduler, events, wakes, root, mailers)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    made = await make_world(tmp_path)
    yield made
    await made.store.aclose()


async def left_to_the_scheduler(world: World, queue_id: str) -> None:
    """Once the handoff is done: nothing delivered, the recipient still queued."""
    await world.settled()
    assert world.files("ann") == []
    assert await status_of(world, queue_id) == {"ann@example.test": RecipientStatus.QUEUED}


async def status_of(world: World, queue_id: str) -> dict[str, RecipientStatus]:
    message = await world.store.message(queue_id)
    assert message is not None
    return {r.address: r.status for r in message.recipients}


async def test_local_mail_is_delivered_by_the_accepting_process(world: World) -> None:
    queue_id = await world.submit("ann@example.test", "bob@example.test")
    queued = [e for e in world.events if isinstance(e, MessageQueued)]
    assert [e.handed_off for e in queued] == [True]  # the scheduler is not woken for it
    # While the handoff holds them, the scheduler finds nothing to claim.
    assert await world.scheduler.run_once() == 0
    await world.settled()
    assert len(world.files("ann")) == 1 and len(world.files("bob")) == 1
    assert await status_of(world, queue_id) == {
        "ann@example.test": RecipientStatus.DELIVERED,
        "bob@example.test": RecipientStatus.DELIVERED,
    }
    attempts = await world.store.attempts(queue_id)
    assert sorted((a.recipient, a.mailer, a.code) for a in attempts) == [
        ("ann@example.test", "local", 250),
        ("bob@example.test", "local", 250),
    ]
    logged = [e for e in world.events if isinstance(e, DeliveryAttempt)]
    assert sorted((e.recipient, e.status) for e in logged) == [
        ("ann@example.test", "delivered"),
        ("bob@example.test", "delivered"),
    ]
    stored_events = await world.store.events(queue_id)
    assert sorted(e.type for e in stored_events if e.type is EventType.DELIVERED) == [
        EventType.DELIVERED,
        EventType.DELIVERED,
    ]
    # Each event says the route its attempt took, and why, as the attempt's row does.
    routes = {(a.recipient, a.route, a.route_reason) for a in attempts}
    told = {(e.recipient, dict(e.details)["route"], dict(e.details)["route_reason"])
            for e in stored_events if e.type is EventType.DELIVERED}  # fmt: skip
    assert told == routes and all(route for _, route, _ in told)
    # Nothing is left for the scheduler, even once the lease would have ended.
    world.clock.advance(3600)
    assert await world.scheduler.run_once() == 0
    assert len(world.files("ann")) == 1
    assert world.wakes == []


async def test_a_success_dsn_is_sent_by_the_accepting_process_under_the_scheduler_rules(
    world: World,
) -> None:
    queue_id = await world.submit("ann@example.test", notify="SUCCESS")
    assert [e.handed_off for e in world.events if isinstance(e, MessageQueued)] == [True]
    await world.settled()
    assert len(world.files("ann")) == 1
    assert await status_of(world, queue_id) == {"ann@example.test": RecipientStatus.DELIVERED}
    (report,) = await dsns_of(world, queue_id)
    assert b"Action: delivered" in report


async def dsns_of(world: World, queue_id: str) -> list[bytes]:
    """The bodies of the DSNs queued about a message."""
    found = []
    for message in await world.store.messages(limit=100):
        if message.dsn_of == queue_id:
            body = await world.store.read_body(message.id)
            assert body is not None
            found.append(body)
    return found


async def test_a_route_naming_another_mailer_is_left_to_the_scheduler(tmp_path: Path) -> None:
    routes: list[dict[str, object]] = [
        {
            "name": "out",
            "mailers": ["local", "mx"],
            "conditions": [{"field": "subject", "operator": "contains", "value": "Hello"}],
        }
    ]
    world = await make_world(tmp_path, routes=routes)
    try:
        queue_id = await world.submit("ann@example.test")
        await left_to_the_scheduler(world, queue_id)
        assert len(await world.store.claim_due(world.clock.time(), limit=10, lease=60)) == 1
    finally:
        await world.store.aclose()


async def test_a_bounce_is_settled_here_with_its_attempt_and_dsn(tmp_path: Path) -> None:
    world = await make_world(tmp_path, mailbox=FullMailbox())
    try:
        queue_id = await world.submit("ann@example.test")
        await world.settled()
        # The scheduler's rules, applied here: bounced with 5.2.2, the attempt in the
        # log, the failure DSN queued to the sender; nothing left for the scheduler.
        assert await status_of(world, queue_id) == {"ann@example.test": RecipientStatus.BOUNCED}
        (attempt,) = await world.store.attempts(queue_id)
        assert (attempt.mailer, attempt.enhanced) == ("local", "5.2.2")
        (report,) = await dsns_of(world, queue_id)
        assert b"Action: failed" in report and b"5.2.2" in report
        assert world.wakes == []
        assert await world.scheduler.run_once() == 1  # the DSN, to the sender's MX
        assert await status_of(world, queue_id) == {"ann@example.test": RecipientStatus.BOUNCED}
    finally:
        await world.store.aclose()


class BrokenDisk:
    """A mailbox store whose disk fails until ``mend()``; then a real Maildir."""

    def __init__(self, maildir: Maildir) -> None:
        self.maildir = maildir
        self.broken = True

    async def deliver(
        self, domain: str, user: str, data: bytes, *, sender: str, recipient: str
    ) -> str:
        if self.broken:
            raise OSError(5, "Input/output error")
        return await self.maildir.deliver(domain, user, data, sender=sender, recipient=recipient)


async def test_a_deferral_is_recorded_here_and_retried_by_the_scheduler_after_its_backoff(
    tmp_path: Path,
) -> None:
    disk = BrokenDisk(Maildir(tmp_path / "mail", clock=FakeClock()))
    world = await make_world(tmp_path, mailbox=disk)
    try:
        queue_id = await world.submit("ann@example.test")
        await world.settled()
        message = await world.store.message(queue_id)
        assert message is not None
        (state,) = message.recipients
        assert (state.status, state.attempts) == (RecipientStatus.DEFERRED, 1)
        assert state.next_attempt_at is not None
        wait = state.next_attempt_at - world.clock.time()
        assert 0.5 * 300 <= wait <= 1.5 * 300  # delivery.first_retry, with its jitter
        (attempt,) = await world.store.attempts(queue_id)
        assert (attempt.mailer, attempt.disposition, attempt.code) == ("local", "deferred", 451)
        assert world.wakes == [None]  # the scheduler learns of the next try
        assert await world.scheduler.run_once() == 0  # not before its time
        disk.broken = False
        world.clock.advance(wait)
        assert await world.scheduler.run_once() == 1
        assert await status_of(world, queue_id) == {"ann@example.test": RecipientStatus.DELIVERED}
        assert len(await world.store.attempts(queue_id)) == 2
    finally:
        await world.store.aclose()


async def test_a_delivery_that_starts_late_is_handed_back(world: World) -> None:
    """With less than half its lease left the scheduler might take it mid-delivery."""
    message_id = await world.submit("ann@example.test")
    world.clock.advance(45)  # the task has not run yet: the lease (60 s) is nearly over
    await world.settled()
    assert world.files("ann") == [] and world.wakes == [None]
    assert [
        c.message.id for c in await world.store.claim_due(world.clock.time(), limit=9, lease=60)
    ] == [message_id]


async def test_a_stopped_handoff_takes_nothing(world: World) -> None:
    await world.direct.stop(1.0)
    await world.submit("ann@example.test")
    assert [e.handed_off for e in world.events if isinstance(e, MessageQueued)] == [False]
    assert await world.scheduler.run_once() == 1
    assert len(world.files("ann")) == 1


async def test_a_killed_handoff_leaves_its_recipients_to_the_scheduler_after_the_lease(
    world: World,
) -> None:
    """The process dies after the commit, before its delivery: nothing is lost."""
    world.direct.start = lambda planned: None  # type: ignore[method-assign]
    queue_id = await world.submit("ann@example.test")
    await asyncio.sleep(0)
    assert await world.scheduler.run_once() == 0  # the lease holds
    world.clock.advance(60)
    assert await world.scheduler.run_once() == 1
    assert len(world.files("ann")) == 1
    assert await status_of(world, queue_id) == {"ann@example.test": RecipientStatus.DELIVERED}


async def test_paused_delivery_delivers_nothing_at_once_either(tmp_path: Path) -> None:
    world = await make_world(tmp_path, paused=True)
    try:
        queue_id = await world.submit("ann@example.test")
        await left_to_the_scheduler(world, queue_id)
    finally:
        await world.store.aclose()


class WatchedStore(FaultyStore):
    """A FaultyStore that says when it has refused an outcome."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.refusal = asyncio.Event()

    async def record_outcomes(
        self,
        message_id: str,
        updates: Sequence[RecipientUpdate],
        attempts: Sequence[Attempt],
        events: Sequence[MailEvent] = (),
    ) -> None:
        try:
            await super().record_outcomes(message_id, updates, attempts, events)
        except StoreError:
            self.refusal.set()
            raise


async def faulty_world(tmp_path: Path) -> tuple[World, WatchedStore]:
    store = WatchedStore(tmp_path / "q.db")
    await store.start()
    return await make_world(tmp_path, store=store), store


async def refused(store: WatchedStore) -> None:
    async with asyncio.timeout(5):
        await store.refusal.wait()
    store.refusal.clear()


async def test_an_outcome_the_store_refuses_is_recorded_once_it_works_again(
    tmp_path: Path,
) -> None:
    world, store = await faulty_world(tmp_path)
    try:
        store.record_fault = StoreUnavailable("the database is away")
        queue_id = await world.submit("ann@example.test")
        await refused(store)
        await refused(store)  # tried again
        store.record_fault = None
        await world.settled()
        assert await status_of(world, queue_id) == {"ann@example.test": RecipientStatus.DELIVERED}
        # The scheduler was told at the first error: it looks, and names the store's
        # trouble on /readyz (all mail delivered at once, it would sit idle).
        assert world.wakes == [None]
        world.clock.advance(3600)
        assert await world.scheduler.run_once() == 0
        assert len(world.files("ann")) == 1
    finally:
        await store.aclose()


async def test_an_outcome_never_recorded_within_the_lease_is_delivered_again_by_the_scheduler(
    tmp_path: Path,
) -> None:
    """The duplicate window: the file is in new/, its outcome is not in the store, and
    the lease ends; at least once, never lost."""
    world, store = await faulty_world(tmp_path)
    try:
        store.record_fault = StoreUnavailable("the database is away")
        queue_id = await world.submit("ann@example.test")
        await refused(store)
        world.clock.advance(60)  # the lease ends while the store is still away
        await world.settled()
        store.record_fault = None
        assert await world.scheduler.run_once() == 1
        assert await status_of(world, queue_id) == {"ann@example.test": RecipientStatus.DELIVERED}
        assert len(world.files("ann")) == 2
    finally:
        await store.aclose()


# -- a relay (delivery.relay_at_once) --------------------------------------------------
RELAY_ROUTE: list[dict[str, object]] = [{"name": "out", "mailers": ["relay"]}]


async def relay_world(tmp_path: Path, peer: SmtpPeer, store: Store | None = None) -> World:
    relay = {
        "name": "relay", "type": "smtp", "host": peer.host, "port": peer.port,
        "tls": "none", "timeout": 5.0, "connect_timeout": 5.0,
    }  # fmt: skip
    return await make_world(tmp_path, routes=RELAY_ROUTE, relays=[relay], store=store)


async def submit_remote(world: World, *rcpts: str) -> str:
    result = await world.intake.submit(
        Source(kind=SourceKind.SMTP, principal="app@shop.test", protocol="ESMTPSA"),
        parse_address("app@shop.test"),
        [Recipient(parse_address(r)) for r in rcpts],
        b"From: app@shop.test\r\nSubject: Your receipt\r\n\r\nThanks\r\n",
        principal=Principal("app@shop.test", ANY_SENDER),
    )
    assert isinstance(result, Queued), result
    return result.queue_id


async def closed(world: World) -> None:
    await world.settled()
    await world.scheduler.stop(1.0)
    for mailer in world.mailers.values():
        await mailer.aclose()
    await world.store.aclose()


async def test_relayed_mail_is_handed_on_by_the_accepting_process(tmp_path: Path) -> None:
    with Peers() as peers:
        peer = peers.start()
        world = await relay_world(tmp_path, peer)
        try:
            queue_id = await submit_remote(world, "a@one.test", "b@two.test")
            assert [e.handed_off for e in world.events if isinstance(e, MessageQueued)] == [True]
            await world.settled()
            (got,) = peer.received
            assert got.recipients == ("a@one.test", "b@two.test")
            assert got.sender == "app@shop.test"
            assert await status_of(world, queue_id) == {
                "a@one.test": RecipientStatus.DELIVERED,
                "b@two.test": RecipientStatus.DELIVERED,
            }
            attempts = await world.store.attempts(queue_id)
            assert {(a.mailer, a.host, a.port, a.code) for a in attempts} == {
                ("relay", peer.host, peer.port, 250)
            }
            # Handed on to a relay is "sent", as when the scheduler does it.
            kinds = [e.type for e in await world.store.events(queue_id)]
            assert kinds.count(EventType.SENT) == 2 and EventType.DELIVERED not in kinds
            world.clock.advance(3600)
            assert await world.scheduler.run_once() == 0
            assert len(peer.received) == 1
        finally:
            await closed(world)


async def test_a_relay_that_defers_leaves_the_attempt_logged_and_the_next_to_the_scheduler(
    tmp_path: Path,
) -> None:
    with Peers() as peers:
        peer = peers.start(greylist=True)  # 451 4.7.1 the first time, 250 after
        world = await relay_world(tmp_path, peer)
        try:
            queue_id = await submit_remote(world, "a@one.test")
            await world.settled()
            assert peer.received == []
            assert await status_of(world, queue_id) == {"a@one.test": RecipientStatus.DEFERRED}
            (first,) = await world.store.attempts(queue_id)
            assert (first.mailer, first.code, first.enhanced) == ("relay", 451, "4.7.1")
            assert world.wakes == [None]
            assert await world.scheduler.run_once() == 0  # its backoff holds
            world.clock.advance(450)  # past delivery.first_retry and its jitter
            assert await world.scheduler.run_once() == 1
            assert await status_of(world, queue_id) == {"a@one.test": RecipientStatus.DELIVERED}
            assert [a.code for a in await world.store.attempts(queue_id)] == [451, 250]
            assert len(peer.received) == 1
        finally:
            await closed(world)


async def test_a_relay_that_refuses_bounces_with_a_dsn_and_a_suppression(tmp_path: Path) -> None:
    with Peers() as peers:
        peer = peers.start(reject_rcpt={"gone@one.test": "550 5.1.1 No such user"})
        world = await relay_world(tmp_path, peer)
        try:
            queue_id = await submit_remote(world, "gone@one.test", "a@one.test")
            await world.settled()
            assert await status_of(world, queue_id) == {
                "gone@one.test": RecipientStatus.BOUNCED,
                "a@one.test": RecipientStatus.DELIVERED,
            }
            (report,) = await dsns_of(world, queue_id)
            assert b"Final-Recipient: rfc822; gone@one.test" in report
            assert b"Status: 5.1.1" in report
            assert await world.store.suppressed(["gone@one.test"], "shop.test") != {}
        finally:
            await closed(world)


async def test_the_leases_of_a_slow_relay_are_renewed_so_the_scheduler_waits(
    tmp_path: Path,
) -> None:
    with Peers() as peers:
        peer = peers.start()
        peer.hold()  # DATA waits
        world = await relay_world(tmp_path, peer)
        try:
            queue_id = await submit_remote(world, "a@one.test")
            await eventually(lambda: peer.held == 1)
            assert world.direct.in_flight == 1
            world.clock.advance(40)
            assert await world.direct.renew_leases() == 1
            world.clock.advance(40)  # past the first lease; within the renewed one
            assert await world.scheduler.run_once() == 0
            peer.release()
            await world.settled()
            assert await status_of(world, queue_id) == {"a@one.test": RecipientStatus.DELIVERED}
            assert len(peer.received) == 1
        finally:
            await closed(world)


async def test_an_outcome_refused_after_a_renewed_lease_is_tried_again_within_it(
    tmp_path: Path,
) -> None:
    """The first lease has ended, but it was renewed while the relay held DATA: a store
    error recording the outcome is tried again until the renewed lease, not given up."""
    store = WatchedStore(tmp_path / "q.db")
    await store.start()
    with Peers() as peers:
        peer = peers.start()
        peer.hold()
        world = await relay_world(tmp_path, peer, store=store)
        try:
            queue_id = await submit_remote(world, "a@one.test")
            await eventually(lambda: peer.held == 1)
            world.clock.advance(40)
            assert await world.direct.renew_leases() == 1
            world.clock.advance(40)  # past the first lease (60 s), within the renewed one
            store.record_fault = StoreUnavailable("the database is away")
            peer.release()
            await refused(store)
            await refused(store)  # tried again, not given up
            store.record_fault = None
            await world.settled()
            assert await status_of(world, queue_id) == {"a@one.test": RecipientStatus.DELIVERED}
            assert await world.scheduler.run_once() == 0
            assert len(peer.received) == 1
        finally:
            await closed(world)

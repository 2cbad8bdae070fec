"""The mx mailer against a loopback DNS server and loopback SMTP peers (127.0.0.2-6)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from postroom.config.mailers import MxMailerSettings
from postroom.delivery.mailers.mta.mx import MxMailer
from postroom.delivery.mailers.mta.pool import ConnectionPool
from postroom.delivery.mailers.mta.transaction import Connection
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Disposition, Outcome
from postroom.delivery.slots import SharedSlots
from postroom.resolver import DnsResolver
from postroom.smtp.replies import Reply
from postroom.store.sqlite.limits import LocalLimits
from tests.conftest import FakeClock
from tests.support.dns_server import DnsServer
from tests.support.smtp_peers import PeerCA, Peers, eventually, shared_port

MX1, MX2, OTHER, IMPLICIT = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"
ZONE = {
    "example.test": {"MX": ["10 mx1.example.test", "20 mx2.example.test"]},
    "mx1.example.test": {"A": [MX1]},
    "mx2.example.test": {"A": [MX2]},
    "other.test": {"MX": ["10 mx.other.test"]},
    "mx.other.test": {"A": [OTHER]},
    "nomx.test": {"A": [IMPLICIT]},
    "null.test": {"MX": ["0 ."]},
    "noaddr.test": {"MX": ["10 ghost.noaddr.test"]},
    "ghost.noaddr.test": {"TXT": ['"no address here"']},
    "secure.test": {"MX": ["10 mx1.example.test"]},
}
DATA = b"From: app@example.test\r\nSubject: hi\r\n\r\nbody\r\n"
MESSAGE = OutboundMessage(id="Q1", sender="app@example.test", data=DATA)
ALICE, BOB = "alice@example.test", "bob@example.test"

MakeMailer = Callable[..., MxMailer]


def rcpts(*addresses: str) -> list[OutboundRecipient]:
    return [OutboundRecipient(a) for a in addresses]


def dispositions(outcomes: list[Outcome]) -> list[Disposition]:
    return [o.disposition for o in outcomes]


@pytest.fixture
def port() -> int:
    return shared_port([MX1, MX2, OTHER, IMPLICIT])


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer(ZONE) as server:
        yield server


@pytest.fixture
def peers() -> Iterator[Peers]:
    with Peers() as started:
        yield started


@pytest.fixture
async def make_mailer(
    dns_server: DnsServer, port: int, fake_clock: FakeClock
) -> AsyncIterator[MakeMailer]:
    made: list[MxMailer] = []

    def make(slots: SharedSlots | None = None, **settings: object) -> MxMailer:
        values: dict[str, object] = {
            "name": "mx", "port": port, "timeout": 0.5, "connect_timeout": 0.5, "ipv6": False,
        }  # fmt: skip
        values.update(settings)
        mailer = MxMailer(
            MxMailerSettings.model_validate(values),
            resolver=DnsResolver(dns_server.settings(timeout=0.5), rng=random.Random(1)),
            hostname="mail.test",
            clock=fake_clock,
            rng=random.Random(2),
            slots=slots,
        )
        made.append(mailer)
        return mailer

    yield make
    for mailer in made:
        await mailer.aclose()


async def test_delivers_to_the_best_mx(peers: Peers, port: int, make_mailer: MakeMailer) -> None:
    mx1, mx2 = peers.start(MX1, port), peers.start(MX2, port)
    outcomes = await make_mailer().deliver(MESSAGE, rcpts(ALICE, BOB))
    assert dispositions(outcomes) == [Disposition.DELIVERED] * 2
    assert outcomes[0].remote is not None and outcomes[0].remote.host == "mx1.example.test"
    assert mx1.received[0].recipients == (ALICE, BOB) and mx2.connections == 0


async def test_next_mx_when_the_first_refuses_the_connection(
    peers: Peers, port: int, make_mailer: MakeMailer
) -> None:
    mx2 = peers.start(MX2, port)  # nothing listens on mx1
    outcomes = await make_mailer().deliver(MESSAGE, rcpts(ALICE))
    assert dispositions(outcomes) == [Disposition.DELIVERED]
    assert len(mx2.received) == 1


@pytest.mark.parametrize(
    "behaviour",
    [{"mail_reply": "451 4.3.0 Busy"}, {"greeting": "421 4.3.2 Busy"}, {"drop_at": "ehlo"}],
)
async def test_next_mx_after_a_soft_failure(
    peers: Peers, port: int, make_mailer: MakeMailer, behaviour: dict[str, str]
) -> None:
    peers.start(MX1, port, **behaviour)
    mx2 = peers.start(MX2, port)
    outcomes = await make_mailer().deliver(MESSAGE, rcpts(ALICE))
    assert dispositions(outcomes) == [Disposition.DELIVERED]
    assert len(mx2.received) == 1


async def test_all_hosts_failing_softly_defers_with_failover(
    peers: Peers, port: int, make_mailer: MakeMailer
) -> None:
    peers.start(MX1, port, mail_reply="451 4.3.0 Busy")  # and nothing on mx2
    [outcome] = await make_mailer().deliver(MESSAGE, rcpts(ALICE))
    assert outcome.disposition is Disposition.DEFERRED and outcome.failover
    assert outcome.reply.enhanced == "4.4.1"  # the last host's reason
    assert "mx2.example.test" in str(outcome.reply)


async def test_greylisting_defers_without_trying_the_backup(
    peers: Peers, port: int, make_mailer: MakeMailer
) -> None:
    peers.start(MX1, port, greylist=True)
    mx2 = peers.start(MX2, port)
    [outcome] = await make_mailer().deliver(MESSAGE, rcpts(ALICE))
    assert outcome.disposition is Disposition.DEFERRED and outcome.failover
    assert outcome.reply.code == 451 and outcome.reply.enhanced == "4.7.1"
    assert mx2.connections == 0


async def test_a_5xx_at_rcpt_bounces_one_and_delivers_the_others(
    peers: Peers, port: int, make_mailer: MakeMailer
) -> None:
    mx1 = peers.start(MX1, port, reject_rcpt={BOB: "550 5.1.1 No such user"})
    outcomes = await make_mailer().deliver(MESSAGE, rcpts(ALICE, BOB, "carol@example.test"))
    assert dispositions(outcomes) == [
        Disposition.DELIVERED, Disposition.BOUNCED, Disposition.DELIVERED,
    ]  # fmt: skip
    assert outcomes[1].reply == Reply(550, "5.1.1", "No such user") and not outcomes[1].failover
    assert mx1.received[0].recipients == (ALICE, "carol@example.test")


async def test_no_mx_falls_back_to_the_domains_address(
    peers: Peers, port: int, make_mailer: MakeMailer
) -> None:
    implicit = peers.start(IMPLICIT, port)
    [outcome] = await make_mailer().deliver(MESSAGE, rcpts("x@nomx.test"))
    assert outcome.disposition is Disposition.DELIVERED
    assert implicit.received[0].recipients == ("x@nomx.test",)


async def test_an_address_literal_needs_no_dns(
    peers: Peers, port: int, make_mailer: MakeMailer, dns_server: DnsServer
) -> None:
    target = peers.start(OTHER, port)
    [outcome] = await make_mailer().deliver(MESSAGE, rcpts(f"x@[{OTHER}]"))
    assert outcome.disposition is Disposition.DELIVERED and len(target.received) == 1
    assert dns_server.queries == []


async def test_null_mx_bounces_at_once(make_mailer: MakeMailer) -> None:
    [outcome] = await make_mailer().deliver(MESSAGE, rcpts("x@null.test"))
    assert outcome.disposition is Disposition.BOUNCED and not outcome.failover
    assert (outcome.reply.code, outcome.reply.enhanced) == (556, "5.1.10")


async def test_nxdomain_bounces(make_mailer: MakeMailer) -> None:
    [outcome] = await make_mailer().deliver(MESSAGE, rcpts("x@missing.test"))
    assert outcome.disposition is Disposition.BOUNCED
    assert (outcome.reply.code, outcome.reply.enhanced) == (550, "5.1.2")


async def test_servfail_defers(make_mailer: MakeMailer, dns_server: DnsServer) -> None:
    dns_server.servfail.add("example.test")
    [outcome] = await make_mailer().deliver(MESSAGE, rcpts(ALICE))
    assert outcome.disposition is Disposition.DEFERRED and outcome.failover
    assert (outcome.reply.code, outcome.reply.enhanced) == (451, "4.4.3")


async def test_mx_hosts_without_addresses_bounce(make_mailer: MakeMailer) -> None:
    [outcome] = await make_mailer().deliver(MESSAGE, rcpts("x@noaddr.test"))
    assert outcome.disposition is Disposition.BOUNCED and outcome.reply.enhanced == "5.4.4"


async def test_several_domains_one_transaction_each(
    peers: Peers, port: int, make_mailer: MakeMailer
) -> None:
    mx1, other = peers.start(MX1, port), peers.start(OTHER, port)
    outcomes = await make_mailer().deliver(
        MESSAGE, rcpts(ALICE, "x@other.test", BOB, "x@null.test")
    )
    assert [o.recipient for o in outcomes] == [ALICE, "x@other.test", BOB, "x@null.test"]
    assert dispositions(outcomes) == [Disposition.DELIVERED] * 3 + [Disposition.BOUNCED]
    assert [r.recipients for r in mx1.received] == [(ALICE, BOB)]
    assert [r.recipients for r in other.received] == [("x@other.test",)]


async def test_require_tls_never_sends_in_the_clear(
    peers: Peers, port: int, make_mailer: MakeMailer
) -> None:
    mx1 = peers.start(MX1, port)  # no STARTTLS
    [outcome] = await make_mailer(require_tls=["secure.test"]).deliver(
        MESSAGE, rcpts("x@secure.test")
    )
    assert outcome.disposition is Disposition.DEFERRED and outcome.failover
    assert (outcome.reply.code, outcome.reply.enhanced) == (454, "4.7.5")
    assert mx1.mail_commands == 0 and mx1.received == []


async def test_require_tls_with_a_verified_certificate(
    peers: Peers, port: int, make_mailer: MakeMailer, tmp_path: Path
) -> None:
    ca = PeerCA(tmp_path)
    mx1 = peers.start(MX1, port, starttls=ca.server_context("mx1.example.test"))
    mailer = make_mailer(require_tls=["secure.test"], ca_file=ca.ca_file)
    [outcome] = await mailer.deliver(MESSAGE, rcpts("x@secure.test"))
    assert outcome.disposition is Disposition.DELIVERED
    assert mx1.received[0].tls is not None


async def test_require_tls_with_a_certificate_for_another_name(
    peers: Peers, port: int, make_mailer: MakeMailer, tmp_path: Path
) -> None:
    ca = PeerCA(tmp_path)
    mx1 = peers.start(MX1, port, starttls=ca.server_context("elsewhere.test"))
    mailer = make_mailer(require_tls=["secure.test"], ca_file=ca.ca_file)
    [outcome] = await mailer.deliver(MESSAGE, rcpts("x@secure.test"))
    assert outcome.disposition is Disposition.DEFERRED and outcome.reply.enhanced == "4.7.5"
    assert mx1.received == []


async def test_two_messages_one_connection(
    peers: Peers, port: int, make_mailer: MakeMailer
) -> None:
    mx1 = peers.start(MX1, port)
    mailer = make_mailer()
    for _ in range(2):
        assert dispositions(await mailer.deliver(MESSAGE, rcpts(ALICE))) == [Disposition.DELIVERED]
    assert len(mx1.received) == 2 and mx1.connections == 1


async def test_per_destination_limit(peers: Peers, port: int, make_mailer: MakeMailer) -> None:
    mx1 = peers.start(MX1, port)
    mailer = make_mailer(max_per_destination=2)
    mx1.hold()
    deliveries = [asyncio.create_task(mailer.deliver(MESSAGE, rcpts(ALICE))) for _ in range(5)]
    await eventually(lambda: mx1.held == 2 and mailer.pool.waiting("example.test") == 3)
    assert mailer.pool.active("example.test") == 2
    mx1.release()
    results = await asyncio.gather(*deliveries)
    assert all(dispositions(r) == [Disposition.DELIVERED] for r in results)
    assert mx1.max_active == 2 and mx1.connections == 2  # the others reused them
    assert mailer.pool.active("example.test") == 0


async def test_transactions_ending_together_with_shared_slots_leave_the_pool_as_found(
    fake_clock: FakeClock,
) -> None:
    """Each gives its shared slot back (an await) as it ends: two ending at once must
    neither end the destination's gate twice nor keep a slot."""
    counts = LocalLimits(None)
    pool: ConnectionPool[Connection] = ConnectionPool(
        clock=fake_clock,
        max_per_destination=2,
        slots=SharedSlots(counts, fake_clock, holder="node"),
        mailer="mx",
    )

    async def transaction() -> None:
        async with pool.limit("example.test"):
            await asyncio.sleep(0)

    try:
        await asyncio.gather(*(transaction() for _ in range(6)))
        assert pool.active("example.test") == pool.waiting("example.test") == 0
        key = "connections mx example.test"
        for _ in range(2):  # both shared slots are free again
            assert await counts.take_slot(key, 2, "other", fake_clock.time(), lease=60)
    finally:
        await pool.aclose()
        await counts.aclose()


class Held:
    """A connection of the pool's (the pool knows nothing of SMTP: anything Reusable)."""

    uses = 1
    usable = True

    def __init__(self) -> None:
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


async def test_a_node_above_its_share_of_the_slots_closes_a_connection_for_a_waiting_node(
    fake_clock: FakeClock,
) -> None:
    counts = LocalLimits(None)
    slots = SharedSlots(counts, fake_clock, holder="node-a")
    pool: ConnectionPool[Held] = ConnectionPool(
        clock=fake_clock, max_per_destination=2, slots=slots, mailer="relay"
    )
    key = "connections relay smtp.example"

    async def opener() -> Held:
        return Held()

    try:
        first, second = [await pool.connect("smtp.example", opener) for _ in range(2)]
        pool.give("smtp.example", first)  # nobody else waits: kept for the next message
        assert pool.take("smtp.example") is first
        assert not await counts.take_slot(key, 2, "node-b", fake_clock.time(), lease=60)
        await slots.look()  # as the keep task does every second
        pool.give("smtp.example", first)  # above its share (1 of 2) while b waits
        assert pool.idle_count() == 0
        async with asyncio.timeout(5):  # closed, and its slot given back, in the background
            while not await counts.take_slot(  # noqa: ASYNC110 (another thread gives it back)
                key, 2, "node-b", fake_clock.time(), lease=60
            ):
                await asyncio.sleep(0.005)
        assert first.closed
        pool.give("smtp.example", second)  # at its share: kept
        assert pool.idle_count() == 1 and not second.closed
    finally:
        await pool.aclose()
        await counts.aclose()


async def test_a_transaction_waiting_for_a_shared_slot_takes_the_nodes_connection_given_back(
    fake_clock: FakeClock,
) -> None:
    """A node holding every slot it may have keeps its own connections busy: a
    transaction waiting for a slot gets the next one given back, not a wait for a slot
    (which only a closed connection frees, after it idles out)."""
    counts = LocalLimits(None)
    slots = SharedSlots(counts, fake_clock, holder="node-a", poll=3600)  # no poll in time
    pool: ConnectionPool[Held] = ConnectionPool(
        clock=fake_clock, max_per_destination=2, slots=slots, mailer="relay"
    )
    cache = pool.key("smtp.example", "peer")
    opened: list[Held] = []

    async def opener() -> Held:
        opened.append(Held())
        return opened[-1]

    try:
        first, _second = [await pool.connect("smtp.example", opener, cache) for _ in range(2)]
        waiting = asyncio.create_task(pool.connect("smtp.example", opener, cache))
        await asyncio.sleep(0.05)  # it asks the store, is refused (2 of 2 held) and waits
        assert not waiting.done()
        pool.give(cache, first)  # its transaction is over
        assert await asyncio.wait_for(waiting, 5) is first
        assert len(opened) == 2 and pool.idle_count() == 0
        # Still exactly the limit counted in the store: nothing taken, nothing leaked.
        await asyncio.sleep(0.05)
        assert not await counts.take_slot(
            "connections relay smtp.example", 2, "node-b", fake_clock.time(), lease=60
        )
    finally:
        await pool.aclose()
        await counts.aclose()


async def test_each_connection_given_back_goes_to_one_waiting_transaction_in_turn(
    fake_clock: FakeClock,
) -> None:
    counts = LocalLimits(None)
    slots = SharedSlots(counts, fake_clock, holder="node-a", poll=3600)  # no poll in time
    pool: ConnectionPool[Held] = ConnectionPool(
        clock=fake_clock, max_per_destination=1, slots=slots, mailer="relay"
    )
    cache = pool.key("smtp.example", "peer")

    async def opener() -> Held:
        return Held()

    try:
        only = await pool.connect("smtp.example", opener, cache)
        first = asyncio.create_task(pool.connect("smtp.example", opener, cache))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(pool.connect("smtp.example", opener, cache))
        await asyncio.sleep(0.05)
        pool.give(cache, only)
        assert await asyncio.wait_for(first, 5) is only  # the longest waiting
        await asyncio.sleep(0.05)
        assert not second.done()  # still waiting: one connection, one transaction
        pool.give(cache, only)
        assert await asyncio.wait_for(second, 5) is only
    finally:
        await pool.aclose()
        await counts.aclose()


class Answering(LocalLimits):
    """The store, answering an ask for a slot only once ``answer`` is set."""

    def __init__(self) -> None:
        super().__init__(None)
        self.answer = asyncio.Event()

    async def take_slot(
        self, key: str, limit: int, holder: str, now: float, *, lease: float
    ) -> bool:
        await self.answer.wait()
        return await super().take_slot(key, limit, holder, now, lease=lease)


@pytest.mark.parametrize("refused", [False, True])
async def test_a_connection_given_back_while_a_slot_is_asked_for_goes_to_the_asker_if_refused(
    fake_clock: FakeClock, refused: bool
) -> None:
    """Given back while this node asks the store for a slot, a connection stays in the
    cache. Granted the slot, the asker opens its own (taking the cached one would cost
    a cancelled ask, two store calls a message, and empty the cache for the next
    transaction); refused, it takes the cached one rather than wait for a slot that
    only that connection's idling out would free."""
    counts = Answering()
    counts.answer.set()
    slots = SharedSlots(counts, fake_clock, holder="node-a", poll=3600)  # no poll in time
    pool: ConnectionPool[Held] = ConnectionPool(
        clock=fake_clock, max_per_destination=1 if refused else 3, slots=slots, mailer="relay"
    )
    cache = pool.key("smtp.example", "peer")

    async def opener() -> Held:
        return Held()

    try:
        given = await pool.connect("smtp.example", opener, cache)
        counts.answer.clear()
        asking = asyncio.create_task(pool.connect("smtp.example", opener, cache))
        await asyncio.sleep(0.05)  # asking the store, not answered yet
        pool.give(cache, given)
        await asyncio.sleep(0.05)
        assert pool.idle_count() == 1 and not asking.done()
        counts.answer.set()
        got = await asyncio.wait_for(asking, 5)
        if refused:
            assert got is given and pool.idle_count() == 0
        else:
            assert got is not given and pool.take(cache) is given
    finally:
        await pool.aclose()
        await counts.aclose()

"""The Store contract, log side: the email log query, and retention (purge)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from postroom.mail.address import Address
from postroom.mail.envelope import Source, SourceKind
from postroom.store import RecipientStatus, Store, logsearch
from postroom.store.models import (
    AttemptCount,
    LogQuery,
    MessageMeta,
    NewMessage,
    RecipientUpdate,
)
from tests.store.conftest import Backend
from tests.store.factories import (
    NOW,
    attempt,
    deferred,
    delivered,
    final,
    new_message,
    to,
)

pytestmark = pytest.mark.store_parts("log", "queue")

ALICE = Address("alice", "example.org")
BILLING = Address("Billing", "shop.example")


async def settle(store: Store, message: NewMessage, *updates: RecipientUpdate) -> None:
    rows = [attempt(message.id, u.address, message.received_at + 1) for u in updates]
    await store.record_outcomes(message.id, updates, rows)


class Log:
    """A small log: six messages in known states, then bulk traffic."""

    def __init__(self) -> None:
        self.m0 = new_message(at=NOW, sender=ALICE, recipients=to("bob@example.net"))
        self.m1 = new_message(at=NOW + 1, sender=ALICE, recipients=to("ZOË@bücher.example"))
        self.m2 = new_message(at=NOW + 2, sender=None, recipients=to("dave@example.net"))
        self.m3 = new_message(
            at=NOW + 3, sender=BILLING, recipients=to("bob@example.net", "erin@example.com")
        )
        self.m4 = new_message(at=NOW + 4, sender=BILLING, recipients=to("frank@example.com"))
        self.m5 = new_message(at=NOW + 5, sender=ALICE, recipients=to("gina@example.com"))
        self.bulk = [
            new_message(
                at=NOW + 10 + i,
                sender=Address("bulk", "example.com"),
                recipients=to(f"x{i}@example.com"),
            )
            for i in range(25)
        ]
        self.named = [self.m0, self.m1, self.m2, self.m3, self.m4, self.m5]

    async def fill(self, store: Store) -> None:
        await asyncio.gather(*(store.enqueue(m) for m in self.named + self.bulk))
        await settle(store, self.m0, delivered("bob@example.net"))
        await settle(store, self.m1, deferred("ZOË@bücher.example", NOW + 600))
        await settle(store, self.m2, final("dave@example.net", RecipientStatus.BOUNCED))
        await settle(
            store,
            self.m3,
            delivered("bob@example.net"),
            final("erin@example.com", RecipientStatus.EXPIRED),
        )
        await store.hold(self.m5.id)

    def ids(self, *messages: NewMessage) -> list[str]:
        return [m.id for m in messages]


@pytest.fixture
async def log(store: Store) -> Log:
    filled = Log()
    await filled.fill(store)
    return filled


async def ids(store: Store, **filters: Any) -> list[str]:
    return [m.id for m in await store.query(LogQuery(**filters))]


async def test_newest_first_with_whole_messages(store: Store, log: Log) -> None:
    everything = sorted((m.id for m in log.named + log.bulk), reverse=True)
    found = await store.query(LogQuery())
    assert [m.id for m in found] == everything
    assert found[-4] == await store.message(log.m3.id)
    assert (await store.query(LogQuery(limit=2)))[0] == await store.message(log.bulk[-1].id)


async def test_cursor_pagination(store: Store, log: Log) -> None:
    everything = sorted((m.id for m in log.named + log.bulk), reverse=True)
    pages: list[list[str]] = []
    cursor = None
    while page := await ids(store, limit=7, cursor=cursor):
        pages.append(page)
        cursor = page[-1]
    assert [len(p) for p in pages] == [7, 7, 7, 7, 3]
    assert [i for p in pages for i in p] == everything
    # Filters and the cursor together.
    queued = await ids(store, status="queued", limit=20)
    assert await ids(store, status="queued", limit=5, cursor=queued[9]) == queued[10:15]


async def test_status_filters(store: Store, log: Log) -> None:
    assert await ids(store, status="delivered") == log.ids(log.m3, log.m0)
    assert await ids(store, status="deferred") == log.ids(log.m1)
    assert await ids(store, status="bounced") == log.ids(log.m2)
    assert await ids(store, status="expired") == log.ids(log.m3)
    assert await ids(store, status="held") == log.ids(log.m5)
    queued = await ids(store, status="queued")
    assert queued == sorted(log.ids(log.m4, log.m5, *log.bulk), reverse=True)
    with pytest.raises(ValueError, match="status"):
        await store.query(LogQuery(status="lost"))


async def test_address_filters_are_case_insensitive_substrings(store: Store, log: Log) -> None:
    assert await ids(store, to="BOB@EXAMPLE") == log.ids(log.m3, log.m0)
    assert await ids(store, to="zoë@BÜCHER") == log.ids(log.m1)
    assert await ids(store, to="example.com", limit=3) == log.ids(*log.bulk[-1:-4:-1])
    assert await ids(store, to="nobody") == []
    assert await ids(store, sender="ALICE@") == log.ids(log.m5, log.m1, log.m0)
    assert await ids(store, sender="billing@shop") == log.ids(log.m4, log.m3)
    assert await ids(store, sender="%") == []  # no wildcards


@pytest.mark.parametrize("walk", [1, 2_000], ids=["indexes", "walk"])
async def test_a_recipient_search_matches_an_address_or_a_domain_from_its_start(
    store: Store, log: Log, walk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The newest messages are walked one by one, the rest found through the indexes:
    # the answers are the same wherever the boundary falls.
    monkeypatch.setattr(logsearch, "SCAN_FIRST", walk)
    both = log.ids(log.m3, log.m0)
    assert await ids(store, to="bob@example.net") == both
    assert await ids(store, to=" Bob@Example.NET ") == both
    assert await ids(store, to="bo") == both
    assert await ids(store, to="example.net") == log.ids(log.m3, log.m2, log.m0)
    assert await ids(store, to="@example.com", limit=2) == log.ids(*log.bulk[-1:-3:-1])
    assert await ids(store, to="@bob") == []  # "@": the domain only
    assert await ids(store, to="ob@example") == []  # not a piece from the middle
    assert await ids(store, to="zoë@bücher") == log.ids(log.m1)  # beyond ASCII too
    assert await ids(store, to="BÜCHER.example") == log.ids(log.m1)
    assert await ids(store, to="zoé") == []
    assert await ids(store, to="x2", limit=50) == log.ids(
        *(m for m in reversed(log.bulk) if store_address(m).startswith("x2"))
    )
    assert await ids(store, to="bob", cursor=log.m3.id) == log.ids(log.m0)


@pytest.mark.parametrize("walk", [1, 2_000], ids=["indexes", "walk"])
async def test_a_recipient_search_finds_letters_beyond_ascii_and_either_form_of_a_domain(
    store: Store, log: Log, walk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Beyond ASCII in any case, from the first letter on; a domain as U-labels finds it
    # stored as A-labels and the other way round (log.m1 is ZOË@bücher.example).
    monkeypatch.setattr(logsearch, "SCAN_FIRST", walk)
    upper = new_message(at=NOW + 100, recipients=to("MÜLLER@example.de"))
    a_label = new_message(at=NOW + 101, recipients=to("ünal@xn--bcher-kva.example"))
    await asyncio.gather(store.enqueue(upper), store.enqueue(a_label))
    assert await ids(store, to="müller@") == [upper.id]
    assert await ids(store, to="Müller@EXAMPLE.de") == [upper.id]
    assert await ids(store, to="ü") == [a_label.id]
    assert await ids(store, to="ÜNAL@") == [a_label.id]
    assert await ids(store, to="@bücher.example") == [a_label.id, log.m1.id]
    assert await ids(store, to="@XN--BCHER-KVA.example") == [a_label.id, log.m1.id]
    assert await ids(store, to="bücher") == [a_label.id, log.m1.id]
    assert await ids(store, to="ünal@bücher.example") == [a_label.id]
    assert await ids(store, to="zoë@xn--bcher-kva") == [log.m1.id]
    assert await ids(store, to="ünal@bücher.examplex") == []
    assert await ids(store, to="müllers") == []


async def test_a_dsn_is_found_by_the_message_it_reports_on(store: Store) -> None:
    original = new_message(at=NOW)
    dsn = replace(
        new_message(at=NOW + 1, sender=None, recipients=to("alice@example.org")),
        source=Source(SourceKind.DSN, protocol="local", dsn_of=original.id),
    )
    other = new_message(at=NOW + 2)
    for message in (original, dsn, other):
        await store.enqueue(message)
    stored = await store.message(dsn.id)
    assert stored is not None and stored.dsn_of == original.id
    assert getattr(await store.message(original.id), "dsn_of", "missing") is None
    assert await ids(store, dsn_of=original.id) == [dsn.id]
    assert await ids(store, dsn_of=other.id) == []


def store_address(message: NewMessage) -> str:
    return str(message.envelope.recipients[0].address)


async def test_newest_before_finds_where_a_bounded_search_ends(store: Store, log: Log) -> None:
    newest_first = sorted((m.id for m in log.named + log.bulk), reverse=True)
    assert await store.newest_before(None, 1) == newest_first[0]
    assert await store.newest_before(None, 5) == newest_first[4]
    assert await store.newest_before(newest_first[4], 2) == newest_first[6]
    assert await store.newest_before(None, len(newest_first) + 1) is None
    with pytest.raises(ValueError, match="count"):
        await store.newest_before(None, 0)
    # A search bounded there reads only those messages, and goes on below them.
    floor = newest_first[4]
    assert await ids(store, sender="bulk", floor=floor) == newest_first[:5]
    assert await ids(store, sender="bulk", cursor=floor, limit=2) == newest_first[5:7]


async def test_a_time_range_finds_a_message_received_long_after_its_id_was_made(
    store: Store,
) -> None:
    # The queue id is made at MAIL FROM; a slow client may finish DATA minutes later.
    slow = replace(new_message(at=NOW), received_at=NOW + 600)
    await store.enqueue(slow)
    assert await ids(store, since=NOW + 300) == [slow.id]
    assert await ids(store, until=NOW + 300) == []
    assert await ids(store, since=NOW + 300, until=NOW + 601) == [slow.id]


async def test_the_log_filters_by_source_and_principal(store: Store) -> None:
    by_key = [
        replace(new_message(at=NOW + i), source=Source(SourceKind.API, principal=name))
        for i, name in enumerate(["shop", "app", "shop"])
    ]
    smtp = new_message(at=NOW + 5)  # an SMTP message, no principal
    await asyncio.gather(*(store.enqueue(m) for m in [*by_key, smtp]))
    shop = [by_key[2].id, by_key[0].id]
    assert await ids(store, source_kind="api", principal="shop") == shop
    assert await ids(store, source_kind="api", principal="app") == [by_key[1].id]
    assert await ids(store, source_kind="api", principal="nobody") == []
    assert await ids(store, source_kind="smtp") == [smtp.id]
    assert await ids(store, source_kind="api", principal="shop", limit=1) == shop[:1]


async def test_since_and_combined_filters(store: Store, log: Log) -> None:
    assert await ids(store, since=NOW + 34) == log.ids(log.bulk[-1])
    assert await ids(store, since=NOW + 3, sender="billing") == log.ids(log.m4, log.m3)
    assert await ids(store, since=NOW + 1, to="bob") == log.ids(log.m3)
    assert await ids(store, sender="alice", status="queued") == log.ids(log.m5)
    assert await ids(store, sender="billing", status="delivered", to="erin") == log.ids(log.m3)
    assert await ids(store, limit=0) == []


# -- retention ------------------------------------------------------------------------------
async def test_purge_removes_only_old_finished_messages(store: Store, backend: Backend) -> None:
    done = new_message(at=NOW, recipients=to("a@example.net", "b@example.net"))
    failed = new_message(at=NOW + 1, recipients=to("c@example.net", "d@example.net"))
    half = new_message(at=NOW + 2, recipients=to("e@example.net", "f@example.net"))
    waiting = new_message(at=NOW + 3)
    boundary = new_message(at=NOW + 500)
    recent = new_message(at=NOW + 1000)
    messages = [done, failed, half, waiting, boundary, recent]
    for message in messages:
        await store.enqueue(message)
    await settle(store, done, delivered("a@example.net"), delivered("b@example.net"))
    await settle(
        store,
        failed,
        final("c@example.net", RecipientStatus.BOUNCED),
        final("d@example.net", RecipientStatus.EXPIRED),
    )
    await settle(store, half, delivered("e@example.net"), deferred("f@example.net", NOW + 60))
    await settle(store, boundary, delivered("bob@example.net"))
    await settle(store, recent, delivered("bob@example.net"))

    assert await store.purge(NOW + 500) == 2
    for gone in (done, failed):
        assert backend.rows_of(store, gone.id) == 0
        assert await store.attempts(gone.id) == []
    kept = [half, waiting, boundary, recent]
    assert [m.id for m in await store.messages()] == [m.id for m in kept]
    for message in kept:
        assert await store.read_body(message.id) is not None
    assert len(await store.attempts(half.id)) == 2
    assert await store.purge(NOW + 500) == 0
    assert await store.purge(NOW + 500.001) == 1  # received at 500: before it now


async def test_purge_bodies_keeps_the_log_of_old_finished_messages(
    store: Store, backend: Backend
) -> None:
    done = new_message(at=NOW, recipients=to("a@example.net", "b@example.net"))
    half = new_message(at=NOW + 1, recipients=to("c@example.net", "d@example.net"))
    recent = new_message(at=NOW + 1000)
    for message in (done, half, recent):
        await store.enqueue(message)
    await settle(store, done, delivered("a@example.net"), delivered("b@example.net"))
    await settle(store, half, delivered("c@example.net"), deferred("d@example.net", NOW + 60))
    await settle(store, recent, delivered("bob@example.net"))
    before = await store.message(done.id)
    assert before is not None and not before.body_removed

    assert await store.purge_bodies(NOW + 500) == 1
    assert await store.read_body(done.id) is None
    after = await store.message(done.id)
    assert after is not None and after.body_removed
    assert (after.size, after.recipients) == (before.size, before.recipients)
    assert len(await store.attempts(done.id)) == 2
    assert [m.id for m in await store.query(LogQuery(limit=10))] == [recent.id, half.id, done.id]
    for kept in (half, recent):  # a recipient still waits; received after the time
        assert await store.read_body(kept.id) is not None
        stored = await store.message(kept.id)
        assert stored is not None and not stored.body_removed
    assert await store.purge_bodies(NOW + 500) == 0  # done already
    assert await store.purge(NOW + 500) == 1  # and the rest of it goes with `purge`
    assert backend.rows_of(store, done.id) == 0


async def test_purge_in_many_transactions(store: Store, backend: Backend) -> None:
    messages = [new_message(at=NOW + i / 1000) for i in range(300)]
    await asyncio.gather(*(store.enqueue(m) for m in messages))
    await asyncio.gather(*(settle(store, m, delivered("bob@example.net")) for m in messages))
    pending = new_message(at=NOW)
    await store.enqueue(pending)
    commits = backend.committer(store).commits
    assert await store.purge(NOW + 1) == 300
    assert backend.committer(store).commits - commits >= 2
    assert [m.id for m in await store.messages(limit=1000)] == [pending.id]


@pytest.mark.store_parts("api")
async def test_the_log_filters_by_time_range_mailer_subject_and_tag(store: Store) -> None:
    early = new_message(at=NOW, recipients=to("a@example.net"))
    late = new_message(at=NOW + 100, recipients=to("b@example.net"))
    await store.enqueue(early)
    await store.enqueue(late)
    await store.record_outcomes(
        late.id,
        [delivered("b@example.net")],
        [attempt(late.id, "b@example.net", NOW + 101, mailer="relay")],
    )
    await store.save_send(
        MessageMeta(early.id, None, "Your Ordér 42", ("welcome", "ü-tag")), None, forget_before=0
    )
    assert await ids(store, until=NOW + 50) == [early.id]
    assert await ids(store, since=NOW + 50, until=NOW + 200) == [late.id]
    assert await ids(store, mailer="relay") == [late.id]
    assert await ids(store, mailer="mx") == []
    assert await ids(store, subject="ordér") == [early.id]  # case-blind, beyond ASCII
    assert await ids(store, tag="welcome") == [early.id]
    assert await ids(store, tag="ü-tag") == [early.id]
    assert await ids(store, tag="welc") == []  # a whole tag, not a piece of one


async def test_a_bounded_window_finds_what_the_same_filters_find_unbounded(
    store: Store, log: Log
) -> None:
    # A page bounded by cursor and floor reads its window's rows of the other tables as
    # one range: the answers are those of the whole log, cut to the window.
    meta = [MessageMeta(m.id, None, f"Order {i}", ("shop",)) for i, m in enumerate(log.bulk)]
    for record in meta:
        await store.save_send(record, None, forget_before=0)
    for m in log.bulk[:20]:
        await settle(store, m, delivered(store_address(m)))
    for filters in (
        {"status": "queued"},
        {"status": "delivered"},
        {"mailer": "mx"},
        {"subject": "order 1"},
        {"tag": "shop"},
        {"status": "delivered", "subject": "ORDER"},
    ):
        whole = await ids(store, limit=100, **filters)
        assert len(whole) >= 3, filters
        cursor, floor = whole[0], whole[-2]
        window = await ids(store, limit=100, cursor=cursor, floor=floor, **filters)
        assert window == whole[1:-1], filters
        assert await ids(store, limit=2, cursor=cursor, floor=floor, **filters) == whole[1:3]


async def test_attempt_counts_are_per_slot_mailer_sender_domain_and_outcome(store: Store) -> None:
    message = new_message(at=NOW, recipients=to("a@example.net", "b@example.net"))
    await store.enqueue(message)
    rows = [
        attempt(message.id, "a@example.net", 3600 * 10 + 5, "deferred", code=451, text="4.3.0 x"),
        attempt(message.id, "a@example.net", 3600 * 10 + 50),
        attempt(message.id, "b@example.net", 3600 * 11 + 1, mailer="relay"),
        attempt(message.id, "b@example.net", 3600 * 9, mailer="relay"),  # before the window
    ]
    await store.record_outcomes(message.id, [], rows)
    assert await store.attempt_counts(3600 * 10, 3600) == [
        AttemptCount(36000.0, "mx", "example.org", "deferred", 1),
        AttemptCount(36000.0, "mx", "example.org", "delivered", 1),
        AttemptCount(39600.0, "relay", "example.org", "delivered", 1),
    ]
    with pytest.raises(ValueError, match="bucket"):
        await store.attempt_counts(0, 0)
    with pytest.raises(ValueError, match="bucket"):
        await store.attempt_counts(0, 100)  # not a whole number of 5-minute slots


async def test_attempt_counts_are_kept_per_5_minutes_and_outlive_the_log(store: Store) -> None:
    message = new_message(at=NOW, sender=Address("Shop", "Example.COM"))
    await store.enqueue(message)
    at = 3600 * 1000  # an hour's start
    rows = [attempt(message.id, "bob@example.net", at + s, mailer="relay") for s in (1, 299, 300)]
    await store.record_outcomes(message.id, [delivered("bob@example.net")], rows)
    assert await store.attempt_counts(at, 300) == [
        AttemptCount(at, "relay", "example.com", "delivered", 2),
        AttemptCount(at + 300, "relay", "example.com", "delivered", 1),
    ]
    assert await store.attempt_counts(at + 10, 21600) == [  # whole slots: from its start
        AttemptCount(at - at % 21600, "relay", "example.com", "delivered", 3)
    ]
    assert await store.delete(message.id)
    assert len(await store.attempt_counts(at, 3600)) == 1  # what happened stays counted

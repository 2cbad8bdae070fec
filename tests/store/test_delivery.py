"""The Store contract, delivery side: claims and leases, outcomes, holds, retries, delete.

Times are explicit ``now`` values: nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import pytest

from postroom.store import QueueStore, RecipientStatus, Store
from postroom.store.models import Claim, RecipientUpdate
from postroom.store.rows import CLAIM_BODY_MAX
from tests.store.conftest import Backend
from tests.store.factories import (
    NOW,
    attempt,
    deferred,
    delivered,
    final,
    new_message,
    to,
    writer_held,
)

pytestmark = pytest.mark.store_parts("queue")

BOB, CAROL, DAVE = "bob@example.net", "carol@example.net", "dave@example.net"
LEASE = 60.0


def claimed(claims: list[Claim]) -> list[tuple[str, list[str]]]:
    return [(c.message.id, [r.address for r in c.recipients]) for c in claims]


async def test_claim_returns_only_due_recipients(store: QueueStore) -> None:
    m1 = new_message(at=NOW, recipients=to(BOB, CAROL, DAVE))
    m2 = new_message(at=NOW + 1)
    later = new_message(at=NOW + 500)
    for message in (later, m2, m1):
        await store.enqueue(message)

    claims = await store.claim_due(NOW + 10, limit=10, lease=LEASE)
    assert claimed(claims) == [(m1.id, [BOB, CAROL, DAVE]), (m2.id, [BOB])]
    assert claims[0].lease_until == NOW + 10 + LEASE
    assert claims[0].message == await store.message(m1.id)

    await store.record_outcomes(
        m1.id,
        [delivered(BOB), deferred(CAROL, NOW + 1000), deferred(DAVE, NOW + 200)],
        [attempt(m1.id, a, NOW + 10) for a in (BOB, CAROL, DAVE)],
    )
    await store.release(m2.id, [BOB])

    # m2 was due first (NOW + 1), then dave (NOW + 200); carol and `later` are not due.
    claims = await store.claim_due(NOW + 300, limit=10, lease=1000)
    assert claimed(claims) == [(m2.id, [BOB]), (m1.id, [DAVE])]
    # The claim carries the whole message, due or not.
    states = {r.address: r.status for r in claims[1].message.recipients}
    assert states == {
        BOB: RecipientStatus.DELIVERED,
        CAROL: RecipientStatus.DEFERRED,
        DAVE: RecipientStatus.DEFERRED,
    }
    assert claimed(await store.claim_due(NOW + 500, limit=10, lease=LEASE)) == [(later.id, [BOB])]


async def test_limit_counts_messages_oldest_due_first(store: QueueStore) -> None:
    messages = [
        new_message(at=NOW + i, recipients=to(*(f"r{j}@example.net" for j in range(i + 1))))
        for i in range(5)
    ]
    for message in random.Random(3).sample(messages, len(messages)):
        await store.enqueue(message)
    first = await store.claim_due(NOW + 10, limit=2, lease=LEASE)
    second = await store.claim_due(NOW + 10, limit=2, lease=LEASE)
    third = await store.claim_due(NOW + 10, limit=2, lease=LEASE)
    assert [c.message.id for c in first + second + third] == [m.id for m in messages]
    assert [len(c.recipients) for c in first + second + third] == [1, 2, 3, 4, 5]
    assert await store.claim_due(NOW + 10, limit=2, lease=LEASE) == []
    assert await store.claim_due(NOW + 10, limit=0, lease=LEASE) == []


async def test_a_live_lease_is_not_claimed_again_and_an_ended_one_is(store: QueueStore) -> None:
    message = new_message(at=NOW, recipients=to(BOB, CAROL))
    await store.enqueue(message)
    first = await store.claim_due(NOW, limit=10, lease=LEASE)
    assert claimed(first) == [(message.id, [BOB, CAROL])]
    assert await store.claim_due(NOW + 1, limit=10, lease=LEASE) == []
    assert await store.claim_due(NOW + LEASE - 0.001, limit=10, lease=LEASE) == []
    # The claimer died: at lease_until the recipients are due again (at least once).
    again = await store.claim_due(first[0].lease_until, limit=10, lease=LEASE)
    assert claimed(again) == [(message.id, [BOB, CAROL])]
    assert again[0].lease_until == NOW + 2 * LEASE


async def test_release_ends_leases_without_an_attempt(store: QueueStore) -> None:
    message = new_message(at=NOW, recipients=to(BOB, CAROL, DAVE))
    await store.enqueue(message)
    await store.claim_due(NOW, limit=10, lease=LEASE)
    await store.release(message.id, [BOB, DAVE])
    assert claimed(await store.claim_due(NOW + 1, limit=10, lease=LEASE)) == [
        (message.id, [BOB, DAVE])
    ]
    stored = await store.message(message.id)
    assert stored is not None
    assert [r.attempts for r in stored.recipients] == [0, 0, 0]
    await store.release("0" * 16, [BOB])  # unknown: nothing happens


async def test_two_store_instances_never_claim_the_same_recipient(backend: Backend) -> None:
    one, two = await backend.open(), await backend.open()
    messages = [new_message(at=NOW + i / 100, recipients=to(BOB, CAROL, DAVE)) for i in range(60)]
    await asyncio.gather(*(one.enqueue(m) for m in messages))

    async def claim(store: QueueStore) -> list[tuple[str, str]]:
        rounds = await asyncio.gather(
            *(store.claim_due(NOW + 10, limit=1, lease=600) for _ in range(4))
        )
        return [
            (c.message.id, r.address) for claims in rounds for c in claims for r in c.recipients
        ]

    # Round after round, both claim at the same time (each round waits for both, so
    # neither can take everything while the other waits for the lock).
    by_one: list[tuple[str, str]] = []
    by_two: list[tuple[str, str]] = []
    while True:
        got_one, got_two = await asyncio.gather(claim(one), claim(two))
        if not got_one and not got_two:
            break
        by_one += got_one
        by_two += got_two
    everything = by_one + by_two
    # Every recipient claimed exactly once. Which store wins each round is up to the
    # scheduler (on a busy host one may win them all), so only the sum is asserted.
    assert len(everything) == len(set(everything)) == 3 * len(messages)


async def test_held_messages_are_not_claimed(store: QueueStore) -> None:
    m1, m2 = new_message(at=NOW), new_message(at=NOW + 1)
    await store.enqueue(m1)
    await store.enqueue(m2)
    assert await store.hold(m1.id) is True
    assert await store.hold(m1.id) is True  # already held: still known
    assert await store.hold("0" * 16) is False
    stored = await store.message(m1.id)
    assert stored is not None and stored.held
    assert claimed(await store.claim_due(NOW + 10, limit=10, lease=LEASE)) == [(m2.id, [BOB])]
    assert await store.next_due() == NOW + 10 + LEASE  # m2's lease; m1 does not count
    assert await store.retry_now(m1.id, NOW + 10) == 0

    assert await store.release_hold(m1.id) is True
    assert await store.release_hold("0" * 16) is False
    stored = await store.message(m1.id)
    assert stored is not None and not stored.held
    assert claimed(await store.claim_due(NOW + 10, limit=10, lease=LEASE)) == [(m1.id, [BOB])]


async def test_hold_all_holds_waiting_messages_and_release_all_frees_them(
    store: QueueStore,
) -> None:
    waiting, finished, already = (new_message(at=NOW + i) for i in range(3))
    for message in (waiting, finished, already):
        await store.enqueue(message)
    await store.claim_due(NOW + 5, limit=1, lease=LEASE)  # waiting's attempt in flight
    await store.hold(already.id)
    done = await store.claim_due(NOW + 5, limit=10, lease=LEASE)
    assert claimed(done) == [(finished.id, [BOB])]
    await store.record_outcomes(finished.id, [delivered(BOB)], [attempt(finished.id, BOB, NOW)])

    assert await store.hold_all(True) == 1  # waiting; not finished mail, not held mail
    assert {m.id for m in await store.messages(limit=10) if m.held} == {waiting.id, already.id}
    # the attempt in flight records its deferral; held, it is not claimed again
    await store.record_outcomes(
        waiting.id, [deferred(BOB, NOW + 10)], [attempt(waiting.id, BOB, NOW + 5, "deferred")]
    )
    assert await store.claim_due(NOW + 100, limit=10, lease=LEASE) == []
    assert await store.next_due() is None
    later = new_message(at=NOW + 50)
    await store.enqueue(later)  # queued after the hold: not held
    assert claimed(await store.claim_due(NOW + 100, limit=10, lease=LEASE)) == [(later.id, [BOB])]

    assert await store.hold_all(False) == 2
    assert await store.hold_all(False) == 0
    assert not any(m.held for m in await store.messages(limit=10))
    assert claimed(await store.claim_due(NOW + 100, limit=10, lease=LEASE)) == [
        (already.id, [BOB]),  # due since it was received, before waiting's retry time
        (waiting.id, [BOB]),
    ]


async def test_hold_during_an_attempt_keeps_its_deferred_recipients(store: QueueStore) -> None:
    message = new_message(at=NOW)
    await store.enqueue(message)
    await store.claim_due(NOW, limit=10, lease=LEASE)
    await store.hold(message.id)
    await store.record_outcomes(
        message.id, [deferred(BOB, NOW + 1)], [attempt(message.id, BOB, NOW, "deferred")]
    )
    assert await store.claim_due(NOW + 100, limit=10, lease=LEASE) == []
    await store.release_hold(message.id)
    assert claimed(await store.claim_due(NOW + 100, limit=10, lease=LEASE)) == [(message.id, [BOB])]


@pytest.mark.store_parts("log")  # reads the attempt rows back
async def test_record_outcomes_round_trip(store: Store) -> None:
    message = new_message(at=NOW, recipients=to(BOB, CAROL, DAVE))
    await store.enqueue(message)
    await store.claim_due(NOW, limit=10, lease=LEASE)
    mid = message.id
    # bob: the primary mailer deferred, the backup delivered (two rows, one attempt);
    # carol: deferred, and a delay warning went out; dave: not tried this time.
    rows = [
        attempt(mid, BOB, NOW + 2, mailer="backup"),
        attempt(mid, CAROL, NOW + 1, "deferred", code=451, text="4.3.0 try later"),
        attempt(mid, BOB, NOW + 1, "deferred", mailer="primary", code=None, text="timed out"),
    ]
    await store.record_outcomes(
        mid,
        [delivered(BOB), deferred(CAROL, NOW + 600, warned=True), deferred(DAVE, NOW + 300)],
        rows,
    )
    stored = await store.message(mid)
    assert stored is not None
    bob, carol, dave = stored.recipients
    assert (bob.status, bob.attempts, bob.next_attempt_at) == (RecipientStatus.DELIVERED, 1, None)
    assert bob.last_reply == "250 2.0.0 Ok"
    assert (carol.status, carol.attempts, carol.next_attempt_at, carol.delay_warned) == (
        RecipientStatus.DEFERRED,
        1,
        NOW + 600,
        True,
    )
    assert (dave.status, dave.attempts, dave.delay_warned) == (RecipientStatus.DEFERRED, 0, False)
    # The timeline is in time order, every field as written.
    assert await store.attempts(mid) == [rows[1], rows[2], rows[0]]
    assert await store.attempts("0" * 16) == []

    assert await store.claim_due(NOW + 299, limit=10, lease=LEASE) == []
    assert claimed(await store.claim_due(NOW + 300, limit=10, lease=1000)) == [(mid, [DAVE])]
    again = await store.claim_due(NOW + 600, limit=10, lease=LEASE)
    assert claimed(again) == [(mid, [CAROL])]
    assert again[0].recipients[0].delay_warned is True
    # delay_warned stays set once a warning went out.
    await store.record_outcomes(
        mid, [deferred(CAROL, NOW + 1200)], [attempt(mid, CAROL, NOW + 600, "deferred")]
    )
    stored = await store.message(mid)
    assert stored is not None
    assert stored.recipients[1].delay_warned is True
    assert stored.recipients[1].attempts == 2
    assert [a.at for a in await store.attempts(mid)] == [NOW + 1, NOW + 1, NOW + 2, NOW + 600]


@pytest.mark.store_parts("log")  # reads the attempt rows back
async def test_an_attempt_keeps_the_route_it_took_and_why(store: Store) -> None:
    message = new_message(at=NOW, recipients=to(BOB))
    await store.enqueue(message)
    await store.claim_due(NOW, limit=10, lease=LEASE)
    first = replace(
        attempt(message.id, BOB, NOW + 1, "deferred", mailer="relay", code=421, text="4.7.0 busy"),
        route="billing",
        route_reason="matched sender_domain equals 'shop.example'",
    )
    second = replace(
        attempt(message.id, BOB, NOW + 1, mailer="backup"),
        route="billing",
        route_reason="failover after relay failed: 421 4.7.0 busy",
    )
    await store.record_outcomes(message.id, [delivered(BOB)], [first, second])
    assert await store.attempts(message.id) == [first, second]
    # An attempt recorded without one (as before routes were kept) reads back as such.
    assert attempt(message.id, BOB, NOW).route is None


@pytest.mark.store_parts("log")  # reads the attempt rows back
async def test_final_states_and_late_outcomes(store: Store) -> None:
    message = new_message(at=NOW, recipients=to(BOB, CAROL, DAVE))
    await store.enqueue(message)
    mid = message.id
    await store.claim_due(NOW, limit=10, lease=LEASE)
    await store.record_outcomes(
        mid,
        [
            final(BOB, RecipientStatus.BOUNCED),
            final(CAROL, RecipientStatus.EXPIRED),
            delivered(DAVE),
        ],
        [attempt(mid, a, NOW) for a in (BOB, CAROL, DAVE)],
    )
    # A claimer whose lease ran out reports late: a final state is not reopened,
    # but its attempt is still logged.
    await store.record_outcomes(mid, [deferred(DAVE, NOW + 60)], [attempt(mid, DAVE, NOW + 1)])
    stored = await store.message(mid)
    assert stored is not None
    assert [(r.status, r.attempts) for r in stored.recipients] == [
        (RecipientStatus.BOUNCED, 1),
        (RecipientStatus.EXPIRED, 1),
        (RecipientStatus.DELIVERED, 1),
    ]
    assert len(await store.attempts(mid)) == 4
    assert await store.claim_due(NOW + 1000, limit=10, lease=LEASE) == []
    assert await store.next_due() is None


async def test_record_outcomes_refuses_inconsistent_input(store: QueueStore) -> None:
    message = new_message()
    await store.enqueue(message)
    with pytest.raises(ValueError, match="recorded for"):
        await store.record_outcomes(message.id, [], [attempt("0" * 16, BOB, NOW)])
    no_time = RecipientUpdate(BOB, RecipientStatus.DEFERRED, None, "451 4.3.0 later")
    with pytest.raises(ValueError, match="next attempt"):
        await store.record_outcomes(message.id, [no_time], [])
    with pytest.raises(ValueError, match="lease"):
        await store.claim_due(NOW, limit=1, lease=0)


async def test_outcomes_of_a_deleted_message_are_dropped(
    store: QueueStore, backend: Backend
) -> None:
    message = new_message()
    await store.enqueue(message)
    await store.claim_due(NOW, limit=10, lease=LEASE)
    assert await store.delete(message.id) is True
    await store.record_outcomes(message.id, [delivered(BOB)], [attempt(message.id, BOB, NOW)])
    assert backend.rows_of(store, message.id) == 0


@pytest.mark.store_parts("log")  # reads the attempt rows back
async def test_outcomes_of_many_messages_in_one_batch_each_go_to_their_own(
    store: Store, backend: Backend
) -> None:
    # Attempts finishing together are recorded in one transaction (on PostgreSQL, as one
    # statement per table): each outcome lands on its own message, one deleted meanwhile
    # takes nothing down with it, and the attempts keep the order they were given in.
    messages = [new_message(at=NOW + i, recipients=to(BOB, CAROL)) for i in range(4)]
    for message in messages:
        await store.enqueue(message)
    await store.claim_due(NOW + 10, limit=10, lease=LEASE)
    gone = messages[2]
    assert await store.delete(gone.id) is True
    outcomes = [
        (
            [delivered(BOB), deferred(CAROL, NOW + 100 + i)],
            [
                attempt(m.id, CAROL, NOW + 20, "deferred", code=451, text="4.3.0 later"),
                attempt(m.id, BOB, NOW + 20),
            ],
        )
        for i, m in enumerate(messages)
    ]
    async with writer_held(backend.committer(store)):
        recorded = [
            asyncio.create_task(store.record_outcomes(m.id, *outcomes[i]))
            for i, m in enumerate(messages)
        ]
        await asyncio.sleep(0)  # submitted: they wait for the writer, together
    await asyncio.gather(*recorded)
    for i, message in enumerate(messages):
        stored = await store.message(message.id)
        if message is gone:
            assert stored is None and backend.rows_of(store, message.id) == 0
            continue
        assert stored is not None
        assert [(r.status, r.attempts, r.next_attempt_at) for r in stored.recipients] == [
            (RecipientStatus.DELIVERED, 1, None),
            (RecipientStatus.DEFERRED, 1, NOW + 100 + i),
        ]
        assert await store.attempts(message.id) == outcomes[i][1]


async def test_a_claim_brings_a_small_message_body(store: QueueStore) -> None:
    small = new_message(at=NOW)
    large = new_message(b"x" * (CLAIM_BODY_MAX + 1), at=NOW + 1)
    for message in (small, large):
        await store.enqueue(message)
    claims = await store.claim_due(NOW + 1, limit=10, lease=LEASE)
    assert [c.message.id for c in claims] == [small.id, large.id]
    first, second = claims
    assert first.body is not None  # no read of its own when it is sent
    assert first.body == await store.read_body(small.id)
    assert second.body is None  # read when it is sent, not held by the claim


async def test_next_due(store: QueueStore) -> None:
    assert await store.next_due() is None
    message = new_message(at=NOW)
    await store.enqueue(message)
    await store.enqueue(new_message(at=NOW + 50))
    assert await store.next_due() == NOW
    await store.claim_due(NOW, limit=1, lease=LEASE)
    assert await store.next_due() == NOW + 50
    await store.claim_due(NOW + 50, limit=1, lease=LEASE)
    # Only leases are left: their end, when a crashed claimer's work is due again.
    assert await store.next_due() == NOW + LEASE
    await store.record_outcomes(
        message.id, [deferred(BOB, NOW + 300)], [attempt(message.id, BOB, NOW, "deferred")]
    )
    assert await store.next_due() == NOW + 50 + LEASE
    await store.retry_now(None, NOW + 100)  # the other one is leased: untouched
    assert await store.next_due() == NOW + 100


async def test_retry_now(store: QueueStore) -> None:
    m1 = new_message(at=NOW, recipients=to(BOB, CAROL, DAVE))
    m2 = new_message(at=NOW + 1)
    held = new_message(at=NOW + 2)
    for message in (m1, m2, held):
        await store.enqueue(message)
    await store.hold(held.id)
    await store.claim_due(NOW + 5, limit=10, lease=LEASE)
    await store.record_outcomes(
        m1.id,
        [delivered(BOB), deferred(CAROL, NOW + 600), deferred(DAVE, NOW + 300)],
        [attempt(m1.id, a, NOW + 5) for a in (BOB, CAROL, DAVE)],
    )
    await store.record_outcomes(
        m2.id, [deferred(BOB, NOW + 900)], [attempt(m2.id, BOB, NOW + 5, "deferred")]
    )
    assert await store.retry_now(m1.id, NOW + 10) == 2  # carol, dave; not delivered bob
    assert await store.retry_now("0" * 16, NOW + 10) == 0
    claims = await store.claim_due(NOW + 10, limit=10, lease=LEASE)
    assert claimed(claims) == [(m1.id, [CAROL, DAVE])]
    assert all(r.next_attempt_at == NOW + 10 for r in claims[0].recipients)
    # All at once: m2's bob; m1's are leased and the held message stays held.
    assert await store.retry_now(None, NOW + 20) == 1
    assert claimed(await store.claim_due(NOW + 20, limit=10, lease=LEASE)) == [(m2.id, [BOB])]


async def test_retry_now_keeps_earlier_due_times(store: QueueStore) -> None:
    first, second = new_message(at=NOW), new_message(at=NOW + 5)
    await store.enqueue(second)
    await store.enqueue(first)
    assert await store.retry_now(None, NOW + 10) == 2
    claims = await store.claim_due(NOW + 10, limit=10, lease=LEASE)
    assert [c.message.id for c in claims] == [first.id, second.id]
    assert [c.recipients[0].next_attempt_at for c in claims] == [NOW, NOW + 5]


@pytest.mark.store_parts("log")  # reads the attempt rows back
async def test_delete(store: Store, backend: Backend) -> None:
    message, other = new_message(at=NOW), new_message(at=NOW + 1)
    await store.enqueue(message)
    await store.enqueue(other)
    await store.claim_due(NOW, limit=1, lease=LEASE)
    await store.record_outcomes(
        message.id, [deferred(BOB, NOW + 60)], [attempt(message.id, BOB, NOW, "deferred")]
    )
    assert await store.delete(message.id) is True
    assert await store.message(message.id) is None
    assert await store.read_body(message.id) is None
    assert await store.attempts(message.id) == []
    assert backend.rows_of(store, message.id) == 0
    assert await store.delete(message.id) is False
    assert claimed(await store.claim_due(NOW + 100, limit=10, lease=LEASE)) == [(other.id, [BOB])]
    assert await store.count_messages() == 1


async def test_renewing_moves_only_live_leases_of_pending_recipients(store: QueueStore) -> None:
    message = new_message(at=NOW, recipients=to(BOB, CAROL, DAVE))
    await store.enqueue(message)
    (claim,) = await store.claim_due(NOW, limit=10, lease=LEASE)
    await store.record_outcomes(message.id, [delivered(DAVE)], [attempt(message.id, DAVE, NOW)])
    # bob and carol still leased: renewed to NOW + 50 + LEASE; dave is final, untouched
    renewed = await store.renew_leases({message.id: [BOB, CAROL, DAVE]}, NOW + 50, lease=LEASE)
    assert renewed == 2
    assert await store.claim_due(NOW + LEASE + 10, limit=10, lease=LEASE) == []
    assert await store.next_due() == NOW + 50 + LEASE
    # once a lease has ended, a late renewal does not take it back
    assert await store.renew_leases({message.id: [BOB]}, NOW + 50 + LEASE, lease=LEASE) == 0
    assert claimed(await store.claim_due(NOW + 50 + LEASE, limit=10, lease=LEASE)) == [
        (claim.message.id, [BOB, CAROL])
    ]
    with pytest.raises(ValueError):
        await store.renew_leases({message.id: [BOB]}, NOW, lease=0)

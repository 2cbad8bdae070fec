"""`send --wait`'s watch over a real store with a fake clock: each attempt is said on the
first look after it is recorded (not at the end), with its reply and the next attempt's
time; it ends when every recipient is final, when the message is held, or at the
timeout, without waiting on the wall clock."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest

from postroom.cli.watch import POLL, Ended, Watched, watch
from postroom.store import RecipientStatus, Store, open_store
from postroom.store.models import Attempt, NewMessage, RecipientUpdate, StoredMessage
from tests.conftest import FakeClock
from tests.store.factories import attempt, deferred, delivered, final, new_message, to


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(f"sqlite:///{tmp_path / 'postroom.db'}")
    yield opened
    await opened.aclose()


def attempt_row(
    message_id: str, recipient: str, disposition: str, mailer: str, reply: str, *, at: float
) -> Attempt:
    """An attempt row as the scheduler writes it: code, enhanced code and text apart."""
    code, enhanced, text = reply.split(" ", 2)
    row = attempt(message_id, recipient, at, disposition, mailer=mailer, code=int(code))
    return dataclasses.replace(row, enhanced=enhanced, text=text)


class Server:
    """The watch's sleep: moves the fake clock, and plays the server's next step (if
    any) as the watch waits; notes how many lines the watch had said by each sleep."""

    def __init__(self, clock: FakeClock, steps: list[Callable[[], Awaitable[None]]]) -> None:
        self.clock = clock
        self.steps = steps
        self.said: list[str] = []
        self.shown: list[str] = []
        self.said_by_sleep: list[int] = []

    async def watch(self, store: Store, queue_id: str, within: float) -> Watched:
        return await watch(
            store, queue_id, within=within, clock=self.clock, say=self.said.append,
            show=self.shown.append, sleep=self.sleep,
        )  # fmt: skip

    async def sleep(self, seconds: float) -> None:
        self.said_by_sleep.append(len(self.said))
        self.clock.advance(seconds)
        if self.steps:
            await self.steps.pop(0)()


async def queued_for_a(store: Store, clock: FakeClock) -> NewMessage:
    message = new_message(at=clock.time(), recipients=to("a@remote.test"))
    await store.enqueue(message)
    return message


def relay_outcome(
    store: Store, message_id: str, state: RecipientUpdate, reply: str, at: float
) -> Callable[[], Awaitable[None]]:
    """The server's step: a@remote.test's attempt at the relay recorded, with ``state``."""

    async def record() -> None:
        await store.record_outcomes(
            message_id,
            [state],
            [attempt_row(message_id, "a@remote.test", state.status.value, "relay", reply, at=at)],
        )

    return record


def deferral(store: Store, message_id: str, now: float) -> Callable[[], Awaitable[None]]:
    """a@remote.test greylisted by the relay, next try in 5 minutes."""
    state = deferred("a@remote.test", now + 300)
    return relay_outcome(store, message_id, state, "451 4.7.1 greylisted, try again", now)


async def test_a_deferral_is_said_at_once_and_the_watch_gives_up_at_the_timeout(
    store: Store,
) -> None:
    clock = FakeClock()
    message = await queued_for_a(store, clock)
    server = Server(clock, [deferral(store, message.id, clock.time())])

    watched = await server.watch(store, message.id, within=10)

    assert watched.ended is Ended.TIMEOUT
    assert watched.message is not None
    assert watched.message.recipients[0].status is RecipientStatus.DEFERRED
    [line] = server.said  # said once, however many looks followed
    assert "a@remote.test  deferred by relay: 451 4.7.1 greylisted, try again" in line
    assert line.endswith("(in 4m 59s)")  # the next attempt, from the look after it
    assert server.said_by_sleep[:2] == [0, 1]  # said on the first look after the attempt
    assert len(server.said_by_sleep) == round(10 / POLL)  # no look after the deadline
    assert server.shown[0] == f"waiting for {message.id} to be delivered..."
    assert server.shown[-1].startswith("waiting for the next attempt at ")


async def test_it_ends_when_every_recipient_is_final(store: Store) -> None:
    clock = FakeClock()
    now = clock.time()
    message = new_message(at=now, recipients=to("a@remote.test", "b@remote.test"))
    await store.enqueue(message)

    async def settle() -> None:
        a = message.id
        await store.record_outcomes(
            message.id,
            [delivered("a@remote.test"), final("b@remote.test", RecipientStatus.BOUNCED)],
            [
                # a failover chain: sg deferred, relay delivered, recorded together
                attempt_row(a, "a@remote.test", "deferred", "sg", "451 4.3.0 busy", at=now),
                attempt_row(a, "a@remote.test", "delivered", "relay", "250 2.0.0 Ok", at=now),
                attempt_row(a, "b@remote.test", "bounced", "relay", "550 5.1.1 no", at=now),
            ],
        )  # fmt: skip

    server = Server(clock, [settle])
    watched = await server.watch(store, message.id, within=60)

    assert watched.ended is Ended.FINAL
    assert [line.split("  ", 1)[1] for line in server.said] == [
        "a@remote.test  deferred by sg: 451 4.3.0 busy",  # no next attempt: relay took it
        "a@remote.test  delivered by relay: 250 2.0.0 Ok",
        "b@remote.test  bounced by relay: 550 5.1.1 no",
    ]


@pytest.mark.parametrize(("operator", "ended"), [("hold", Ended.HELD), ("delete", Ended.GONE)])
async def test_a_held_or_deleted_message_ends_the_watch(
    store: Store, operator: str, ended: Ended
) -> None:
    clock = FakeClock()
    message = new_message(at=clock.time(), recipients=to("a@remote.test"))
    await store.enqueue(message)

    async def act() -> None:
        assert await (store.hold if operator == "hold" else store.delete)(message.id)

    server = Server(clock, [act])
    watched = await server.watch(store, message.id, within=600)

    assert watched.ended is ended
    assert len(server.said_by_sleep) == 1  # on the first look after it
    assert (watched.message is None) == (ended is Ended.GONE)


class CommittedBetweenReads:
    """The store as the watch reads it, with the server's ``step`` committed once, right
    after the first read of the watch's first look: between its two reads."""

    def __init__(self, store: Store, step: Callable[[], Awaitable[None]]) -> None:
        self._store = store
        self._step: Callable[[], Awaitable[None]] | None = step

    async def message(self, queue_id: str) -> StoredMessage | None:
        found = await self._store.message(queue_id)
        await self._between()
        return found

    async def attempts(self, queue_id: str) -> list[Attempt]:
        found = await self._store.attempts(queue_id)
        await self._between()
        return found

    async def _between(self) -> None:
        step, self._step = self._step, None
        if step is not None:
            await step()


async def test_a_deferral_committed_between_two_reads_is_said_with_its_next_attempt(
    store: Store,
) -> None:
    clock = FakeClock()
    message = await queued_for_a(store, clock)
    server = Server(clock, [])
    raced = CommittedBetweenReads(store, deferral(store, message.id, clock.time()))
    await server.watch(cast(Store, raced), message.id, within=10)

    [line] = server.said
    assert "deferred by relay: 451 4.7.1 greylisted, try again; next attempt at " in line


async def test_a_last_outcome_committed_between_two_reads_is_said_before_the_end(
    store: Store,
) -> None:
    clock = FakeClock()
    message = await queued_for_a(store, clock)
    deliver = relay_outcome(
        store, message.id, delivered("a@remote.test"), "250 2.0.0 Ok", clock.time()
    )
    server = Server(clock, [])
    watched = await server.watch(cast(Store, CommittedBetweenReads(store, deliver)), message.id, 60)

    assert watched.ended is Ended.FINAL
    [line] = server.said
    assert "a@remote.test  delivered by relay: 250 2.0.0 Ok" in line

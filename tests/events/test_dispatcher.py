"""Outgoing webhooks: signed POSTs to a real loopback receiver, retries with backoff
after a 500 or no answer, one message's events in order, a give-up after retry_for."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from postroom.config.eventhooks import WebhookTarget
from postroom.errors import StoreUnavailable
from postroom.events.dispatcher import RETRY_DELAYS, WebhookDispatcher
from postroom.events.signing import TIMESTAMP_HEADER, verify
from postroom.mail.events import EventType, MailEvent, new_event_id
from postroom.store.base import EventRoute
from postroom.store.models import WebhookState
from postroom.store.sqlite import SqliteStore
from tests.conftest import FakeClock
from tests.support.http_fake import FakeHttp, Reply, Request, serve

SECRET = "whsec-test-secret"


def _target(url: str, **given: object) -> WebhookTarget:
    return WebhookTarget.model_validate(
        {"name": "app", "url": url, "secret": SECRET, "timeout": 2, **given}
    )


def _event(kind: EventType, queue_id: str, at: float) -> MailEvent:
    return MailEvent(id=new_event_id(), type=kind, at=at, recipient="bob@example.net",
                     queue_id=queue_id, mailer="mx", reply="250 2.0.0 ok")  # fmt: skip


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "postroom.db")
    await store.start()
    yield store
    await store.aclose()


class Receiver:
    """Answers from a script (then 200), checking each signature as a receiver would."""

    def __init__(self, clock: FakeClock, statuses: list[int]) -> None:
        self.clock = clock
        self.statuses = statuses
        self.verified: list[bool] = []

    def __call__(self, request: Request) -> Reply:
        self.verified.append(verify(SECRET, request.headers, request.body, now=self.clock.now))
        return Reply(self.statuses.pop(0) if self.statuses else 200)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def receiver(clock: FakeClock) -> Receiver:
    return Receiver(clock, [])


@pytest.fixture
def http(receiver: Receiver) -> Iterator[FakeHttp]:
    with serve(receiver) as fake:
        yield fake


async def test_an_event_is_posted_signed_in_the_documented_shape(
    store: SqliteStore, clock: FakeClock, receiver: Receiver, http: FakeHttp
) -> None:
    event = _event(EventType.DELIVERED, "Q1", clock.now)
    await store.record_events([event])
    dispatcher = WebhookDispatcher(store, [_target(http.url + "/hook")], clock, environ={})
    try:
        assert await dispatcher.run_once() == 1
    finally:
        await dispatcher.aclose()
    [request] = http.requests
    assert receiver.verified == [True]
    assert request.path == "/hook"
    assert request.headers[TIMESTAMP_HEADER.lower()] == str(int(clock.now))
    assert request.headers["x-postroom-event-id"] == event.id
    assert MailEvent.from_json(request.json()) == event
    assert set(request.json()) == {
        "id", "type", "timestamp", "queue_id", "message_id", "recipient", "sender", "mailer",
        "reply", "reason", "origin", "tags", "metadata", "details",
    }  # fmt: skip
    # A body changed on the way, or another secret, does not verify.
    assert not verify(SECRET, request.headers, request.body + b" ", now=clock.now)
    assert not verify("other", request.headers, request.body, now=clock.now)
    assert not verify(SECRET, request.headers, request.body, now=clock.now + 301)
    [done] = await store.webhook_deliveries()
    assert (done.state, done.last_status, done.attempts) == (WebhookState.DELIVERED, 200, 1)


async def test_a_500_is_retried_with_backoff_and_later_events_of_the_message_wait(
    store: SqliteStore, clock: FakeClock, receiver: Receiver, http: FakeHttp
) -> None:
    receiver.statuses[:] = [500, 503]
    first, second = (
        _event(EventType.QUEUED, "Q1", clock.now),
        _event(EventType.DELIVERED, "Q1", clock.now),
    )
    await store.record_events([first, second])
    dispatcher = WebhookDispatcher(store, [_target(http.url)], clock, environ={})
    try:
        assert await dispatcher.run_once() == 1  # the second waits behind the first
        [later, waiting] = await store.webhook_deliveries(webhook="app")
        assert (later.event.id, later.attempts) == (second.id, 0)
        assert (waiting.event.id, waiting.last_status, waiting.last_error) == (
            first.id,
            500,
            "HTTP 500",
        )
        assert waiting.next_attempt_at == clock.now + RETRY_DELAYS[0]
        assert await dispatcher.run_once() == 0  # not due yet
        clock.advance(RETRY_DELAYS[0])
        assert await dispatcher.run_once() == 1  # 503
        clock.advance(RETRY_DELAYS[1])
        assert await dispatcher.run_once() == 1  # 200: the first is through
        assert await dispatcher.run_once() == 1  # then the second
    finally:
        await dispatcher.aclose()
    sent = [json.loads(r.body)["id"] for r in http.requests]
    assert sent == [first.id, first.id, first.id, second.id]
    assert receiver.verified == [True] * 4
    assert {d.state for d in await store.webhook_deliveries()} == {WebhookState.DELIVERED}


async def test_an_event_is_given_up_after_retry_for_and_recorded_failed(
    store: SqliteStore, clock: FakeClock, receiver: Receiver, http: FakeHttp
) -> None:
    receiver.statuses[:] = [500] * 10
    await store.record_events([_event(EventType.BOUNCED, "Q1", clock.now)])
    dispatcher = WebhookDispatcher(store, [_target(http.url, retry_for=60)], clock, environ={})
    try:
        await dispatcher.run_once()  # +10 s
        clock.advance(10)
        await dispatcher.run_once()  # +30 s: 40 s in
        clock.advance(30)
        await dispatcher.run_once()  # next would be at 100 s, past 60 s: failed
        clock.advance(3600)
        assert await dispatcher.run_once() == 0
    finally:
        await dispatcher.aclose()
    [failed] = await store.webhook_deliveries(state=WebhookState.FAILED)
    assert (failed.attempts, failed.last_error) == (3, "HTTP 500")
    assert len(http.requests) == 3


async def test_no_answer_in_time_is_a_failure_retried(store: SqliteStore, clock: FakeClock) -> None:
    with serve(lambda request: Reply(stall=True)) as http:
        await store.record_events([_event(EventType.DEFERRED, "Q1", clock.now)])
        target = _target(http.url, timeout=0.2)
        dispatcher = WebhookDispatcher(store, [target], clock, environ={})
        try:
            await dispatcher.run_once()
        finally:
            await dispatcher.aclose()
    [pending] = await store.webhook_deliveries()
    assert (pending.state, pending.last_status, pending.last_error) == (
        WebhookState.PENDING,
        None,
        "no answer within 0.2 s",
    )


async def test_the_filters_choose_event_types_and_tags(
    store: SqliteStore, clock: FakeClock, http: FakeHttp
) -> None:
    bounces = _target(http.url, name="bounces", events=["bounced", "complained"])
    tagged = _target(http.url, name="welcome", tags=["welcome"])
    dispatcher = WebhookDispatcher(store, [bounces, tagged], clock, environ={})
    plain = _event(EventType.BOUNCED, "Q1", clock.now)
    assert dispatcher.route(plain) == ["bounces"]
    welcome = dataclasses.replace(plain, type=EventType.DELIVERED, tags=("welcome",))
    assert dispatcher.route(welcome) == ["welcome"]
    await dispatcher.aclose()


def test_a_webhook_without_a_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="set secret or secret_env"):
        WebhookTarget.model_validate({"name": "app", "url": "http://127.0.0.1:9/"})


async def test_events_of_a_webhook_removed_from_the_configuration_are_recorded_failed(
    store: SqliteStore, clock: FakeClock, http: FakeHttp
) -> None:
    await store.record_events([_event(EventType.DELIVERED, "Q1", clock.now)])
    await store.fan_out(lambda event: ["gone"], limit=10, now=clock.now)
    dispatcher = WebhookDispatcher(store, [_target(http.url)], clock, environ={})
    try:
        assert await dispatcher.run_once() == 1
    finally:
        await dispatcher.aclose()
    [failed] = await store.webhook_deliveries(webhook="gone")
    assert (failed.state, failed.last_error) == (WebhookState.FAILED, "not configured")
    assert http.requests == []


async def test_with_no_webhook_a_round_marks_every_new_event_without_reading_it(
    store: SqliteStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.record_events([_event(EventType.DELIVERED, "Q1", clock.now)])
    await store.fan_out(lambda event: ["gone"], limit=10, now=clock.now)
    await store.record_events([_event(EventType.DELIVERED, f"Q{i}", clock.now) for i in range(7)])
    monkeypatch.setattr("postroom.events.dispatcher._FAN_OUT_BATCH", 3)  # several batches
    routes: list[EventRoute | None] = []
    fan_out = store.fan_out

    async def watched(route: EventRoute | None, *, limit: int, now: float) -> int:
        routes.append(route)
        return await fan_out(route, limit=limit, now=now)

    monkeypatch.setattr(store, "fan_out", watched)
    dispatcher = WebhookDispatcher(store, [], clock, environ={})
    try:
        assert await dispatcher.run_once() == 1  # the removed webhook's row, settled
    finally:
        await dispatcher.aclose()
    assert routes == [None, None, None]  # 3 + 3 + 1: no event read back to be routed
    assert await store.webhook_backlog() == {"": 0}
    [failed] = await store.webhook_deliveries(webhook="gone")
    assert (failed.state, failed.last_error) == (WebhookState.FAILED, "not configured")


async def test_a_store_outage_pauses_the_rounds_and_never_ends_the_task(
    store: SqliteStore, clock: FakeClock
) -> None:
    failures = [StoreUnavailable("database is locked")] * 3
    fan_out = store.fan_out

    async def flaky(route: EventRoute | None, *, limit: int, now: float) -> int:
        if failures:
            raise failures.pop()
        return await fan_out(route, limit=limit, now=now)

    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 5:
            raise asyncio.CancelledError

    store.fan_out = flaky  # type: ignore[method-assign]
    dispatcher = WebhookDispatcher(store, [], clock, environ={}, sleep=sleep)
    try:
        with pytest.raises(asyncio.CancelledError):
            await dispatcher.run()
    finally:
        await dispatcher.aclose()
    assert waits == [0.5, 1.0, 2.0, 1.0, 1.0]  # doubling while it fails, then the poll

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from postroom.net.throttle import ConnectionCounter, FailureThrottle, client_key
from postroom.store.sqlite.limits import LocalLimits
from tests.conftest import FakeClock


@pytest.fixture
async def counts() -> AsyncIterator[LocalLimits]:
    """Counts of one process (the store's are shared: tests/store/test_limits.py)."""
    limits = LocalLimits(None)
    yield limits
    await limits.aclose()


async def test_failures_block_until_the_window_passes(counts: LocalLimits) -> None:
    clock = FakeClock()
    throttle = FailureThrottle(counts, clock, max_failures=3, window=60)
    for _ in range(2):
        assert await throttle.begin("192.0.2.1", "a@example.test") is not None
    clock.advance(30)
    assert await throttle.begin("192.0.2.1", "b@example.test") is not None
    assert await throttle.begin("192.0.2.1", "c@example.test") is None
    assert await throttle.begin("192.0.2.2", "c@example.test") is not None
    clock.advance(31)  # the first two failures left the window
    assert await throttle.begin("192.0.2.1", "c@example.test") is not None


async def test_attempts_in_flight_count_before_they_are_settled(counts: LocalLimits) -> None:
    throttle = FailureThrottle(counts, FakeClock(), max_failures=3, window=60)
    attempts = [await throttle.begin("192.0.2.1", "a@example.test") for _ in range(5)]
    assert [a is not None for a in attempts] == [True, True, True, False, False]


async def test_a_success_forgets_only_the_failures_at_its_own_account(
    counts: LocalLimits,
) -> None:
    throttle = FailureThrottle(counts, FakeClock(), max_failures=3, window=60)
    own = await throttle.begin("192.0.2.1", "own@example.test")
    assert own is not None
    assert await throttle.begin("192.0.2.1", "victim@example.test") is not None
    assert await throttle.begin("192.0.2.1", "victim@example.test") is not None
    await own.succeeded()  # the attacker's own login wipes nothing of the guesses
    assert await throttle.begin("192.0.2.1", "victim@example.test") is not None
    assert await throttle.begin("192.0.2.1", "own@example.test") is None


async def test_a_success_forgets_its_own_typos(counts: LocalLimits) -> None:
    throttle = FailureThrottle(counts, FakeClock(), max_failures=2, window=60)
    assert await throttle.begin("192.0.2.1", "a@example.test") is not None
    attempt = await throttle.begin("192.0.2.1", "a@example.test")
    assert attempt is not None
    await attempt.succeeded()
    assert await throttle.begin("192.0.2.1", "a@example.test") is not None


async def test_guesses_at_one_account_from_many_clients_are_throttled(
    counts: LocalLimits,
) -> None:
    throttle = FailureThrottle(
        counts, FakeClock(), max_failures=3, max_account_failures=4, window=60
    )
    answered = [await throttle.begin(f"192.0.2.{n}", "victim@example.test") for n in range(1, 9)]
    assert sum(a is not None for a in answered) == 4
    assert await throttle.begin("192.0.2.50", "other@example.test") is not None


async def test_ipv6_clients_count_per_64(counts: LocalLimits) -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9")
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("192.0.2.7") == "192.0.2.7"
    throttle = FailureThrottle(counts, FakeClock(), max_failures=1, window=60)
    assert await throttle.begin("2001:db8::1", "a@example.test") is not None
    assert await throttle.begin("2001:db8::2", "b@example.test") is None


def test_connection_counter_limits_total_and_per_ip() -> None:
    counter = ConnectionCounter(max_total=3, max_per_ip=2)
    assert counter.try_acquire("a") and counter.try_acquire("a")
    assert not counter.try_acquire("a")
    assert counter.try_acquire("b")
    assert not counter.try_acquire("c")  # total reached
    counter.release("a")
    assert counter.try_acquire("c")
    assert counter.total == 3

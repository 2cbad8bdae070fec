from __future__ import annotations

from postroom.net.throttle import ConnectionCounter, FailureThrottle
from tests.conftest import FakeClock


def test_failures_block_until_the_window_passes() -> None:
    clock = FakeClock()
    throttle = FailureThrottle(clock, max_failures=3, window=60)
    for _ in range(2):
        throttle.record_failure("192.0.2.1")
    assert not throttle.blocked("192.0.2.1")
    clock.advance(30)
    throttle.record_failure("192.0.2.1")
    assert throttle.blocked("192.0.2.1")
    assert not throttle.blocked("192.0.2.2")
    clock.advance(31)  # the first two failures left the window
    assert not throttle.blocked("192.0.2.1")


def test_success_forgets_failures() -> None:
    throttle = FailureThrottle(FakeClock(), max_failures=2, window=60)
    throttle.record_failure("a")
    throttle.record_success("a")
    throttle.record_failure("a")
    assert not throttle.blocked("a")


def test_connection_counter_limits_total_and_per_ip() -> None:
    counter = ConnectionCounter(max_total=3, max_per_ip=2)
    assert counter.try_acquire("a") and counter.try_acquire("a")
    assert not counter.try_acquire("a")
    assert counter.try_acquire("b")
    assert not counter.try_acquire("c")  # total reached
    counter.release("a")
    assert counter.try_acquire("c")
    assert counter.total == 3

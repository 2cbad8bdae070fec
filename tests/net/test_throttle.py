from __future__ import annotations

from postroom.net.throttle import ConnectionCounter, FailureThrottle, client_key
from tests.conftest import FakeClock


def test_failures_block_until_the_window_passes() -> None:
    clock = FakeClock()
    throttle = FailureThrottle(clock, max_failures=3, window=60)
    for _ in range(2):
        assert throttle.begin("192.0.2.1", "a@example.test") is not None
    clock.advance(30)
    assert throttle.begin("192.0.2.1", "b@example.test") is not None
    assert throttle.begin("192.0.2.1", "c@example.test") is None
    assert throttle.begin("192.0.2.2", "c@example.test") is not None
    clock.advance(31)  # the first two failures left the window
    assert throttle.begin("192.0.2.1", "c@example.test") is not None


def test_attempts_in_flight_count_before_they_are_settled() -> None:
    throttle = FailureThrottle(FakeClock(), max_failures=3, window=60)
    attempts = [throttle.begin("192.0.2.1", "a@example.test") for _ in range(5)]
    assert [a is not None for a in attempts] == [True, True, True, False, False]


def test_a_success_forgets_only_the_failures_at_its_own_account() -> None:
    throttle = FailureThrottle(FakeClock(), max_failures=3, window=60)
    own = throttle.begin("192.0.2.1", "own@example.test")
    assert own is not None
    assert throttle.begin("192.0.2.1", "victim@example.test") is not None
    assert throttle.begin("192.0.2.1", "victim@example.test") is not None
    own.succeeded()  # the attacker's own login wipes nothing of the guesses at the victim
    assert throttle.begin("192.0.2.1", "victim@example.test") is not None
    assert throttle.begin("192.0.2.1", "own@example.test") is None


def test_a_success_forgets_its_own_typos() -> None:
    throttle = FailureThrottle(FakeClock(), max_failures=2, window=60)
    assert throttle.begin("192.0.2.1", "a@example.test") is not None
    attempt = throttle.begin("192.0.2.1", "a@example.test")
    assert attempt is not None
    attempt.succeeded()
    assert throttle.begin("192.0.2.1", "a@example.test") is not None


def test_guesses_at_one_account_from_many_clients_are_throttled() -> None:
    throttle = FailureThrottle(FakeClock(), max_failures=3, max_account_failures=4, window=60)
    answered = [throttle.begin(f"192.0.2.{n}", "victim@example.test") for n in range(1, 9)]
    assert sum(a is not None for a in answered) == 4
    assert throttle.begin("192.0.2.50", "other@example.test") is not None


def test_ipv6_clients_count_per_64() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9")
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("192.0.2.7") == "192.0.2.7"
    throttle = FailureThrottle(FakeClock(), max_failures=1, window=60)
    assert throttle.begin("2001:db8::1", "a@example.test") is not None
    assert throttle.begin("2001:db8::2", "b@example.test") is None


def test_idle_keys_are_swept() -> None:
    clock = FakeClock()
    throttle = FailureThrottle(clock, max_failures=3, window=60)
    for n in range(400):  # 800 keys: a client and an account each
        throttle.begin(f"10.0.{n // 256}.{n % 256}", f"u{n}@example.test")
    clock.advance(61)
    for n in range(200):  # at 1024 keys the 800 that left the window go
        throttle.begin(f"10.1.{n // 256}.{n % 256}", f"v{n}@example.test")
    assert len(throttle._failures) == 400


def test_connection_counter_limits_total_and_per_ip() -> None:
    counter = ConnectionCounter(max_total=3, max_per_ip=2)
    assert counter.try_acquire("a") and counter.try_acquire("a")
    assert not counter.try_acquire("a")
    assert counter.try_acquire("b")
    assert not counter.try_acquire("c")  # total reached
    counter.release("a")
    assert counter.try_acquire("c")
    assert counter.total == 3

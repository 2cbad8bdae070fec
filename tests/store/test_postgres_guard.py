"""The bounds on waiting for PostgreSQL (store.postgres.guard), without a database: the
URL's defaults, the pause after a failure, and the watchdog ending a call on a socket
that gets no answer."""

from __future__ import annotations

import socket
import threading

import pytest
from psycopg.conninfo import conninfo_to_dict

from postroom.errors import StoreUnavailable
from postroom.store.postgres.guard import Guard, conninfo
from tests.conftest import FakeClock


def test_the_url_gets_bounds_on_an_unanswering_peer_unless_it_sets_its_own() -> None:
    given = conninfo_to_dict(conninfo("postgresql://postroom@db.example/mail", 5.0))
    assert given["connect_timeout"] == "5"
    assert given["keepalives"] == "1"
    assert given["tcp_user_timeout"] == "5000"
    assert int(str(given["keepalives_idle"])) + 3 * int(str(given["keepalives_interval"])) <= 10
    own = conninfo_to_dict(
        conninfo("postgresql://postroom@db.example/mail?connect_timeout=30&keepalives=0", 5.0)
    )
    assert own["connect_timeout"] == "30" and own["keepalives"] == "0"
    assert conninfo_to_dict(conninfo("postgresql:///mail", 0.5))["connect_timeout"] == "2"


def test_after_a_failure_calls_fail_at_once_until_one_try_is_answered(
    fake_clock: FakeClock,
) -> None:
    guard = Guard(5.0, pause=0.5, clock=fake_clock.monotonic)
    guard.admit()  # no failure yet
    guard.failed()
    with pytest.raises(StoreUnavailable):
        guard.admit()
    fake_clock.advance(0.5)
    guard.admit()  # the pause is over: this call tries
    with pytest.raises(StoreUnavailable):
        guard.admit()  # while it tries, the others still fail at once
    guard.failed()  # the try failed: a new pause
    fake_clock.advance(0.4)
    with pytest.raises(StoreUnavailable):
        guard.admit()
    fake_clock.advance(0.1)
    guard.admit()
    guard.answered()  # the try went through: calls go ahead again
    guard.admit()
    guard.admit()


def test_the_watchdog_ends_a_call_that_gets_no_answer_and_starts_the_pause(
    fake_clock: FakeClock,
) -> None:
    guard = Guard(5.0, clock=fake_clock.monotonic)
    ours, theirs = socket.socketpair()
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(ours.recv(10)))
    try:
        reader.start()  # a call blocked reading its answer
        token = guard.arm(ours.fileno())
        fake_clock.advance(4.9)
        reader.join(0.6)  # the watchdog looked more than once: not yet its deadline
        assert reader.is_alive()
        fake_clock.advance(0.2)
        reader.join(10)
        assert not reader.is_alive() and received == [b""]  # the connection ended
        assert guard.disarm(token) is True  # the caller learns its call ran out of time
        with pytest.raises(StoreUnavailable):
            guard.admit()
        assert ours.fileno() >= 0  # its descriptor is still the caller's to close
    finally:
        theirs.close()
        ours.close()
        guard.close()


def test_a_call_answered_in_time_is_left_alone(fake_clock: FakeClock) -> None:
    guard = Guard(5.0, clock=fake_clock.monotonic)
    ours, theirs = socket.socketpair()
    try:
        token = guard.arm(ours.fileno())
        fake_clock.advance(4.0)
        assert guard.disarm(token) is False
        fake_clock.advance(10.0)
        theirs.sendall(b"answer")
        assert ours.recv(10) == b"answer"
        guard.admit()
    finally:
        theirs.close()
        ours.close()
        guard.close()

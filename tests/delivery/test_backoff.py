"""Retry schedule, expiry and delay warnings: pure functions over clock values."""

from __future__ import annotations

import random

import pytest

from postroom.config.settings import DeliverySettings
from postroom.delivery.backoff import (
    JITTER,
    base_delay,
    delay_warning_due,
    is_expired,
    next_attempt,
)
from tests.conftest import FakeClock

DEFAULTS = DeliverySettings()
HOUR = 3600.0
DAY = 86400.0

# The table in the module docstring: attempts made → wait before the next one.
SCHEDULE = [(1, 300.0), (2, 600.0), (3, 1200.0), (4, 2400.0), (5, 4000.0), (6, 4000.0)]


@pytest.mark.parametrize(("attempts", "wait"), SCHEDULE)
def test_base_schedule_matches_the_documented_table(attempts: int, wait: float) -> None:
    assert base_delay(attempts, DEFAULTS) == wait


def test_seeded_schedule_is_reproducible_and_within_jitter() -> None:
    now = 1_800_000_000.0
    first = [next_attempt(a, now, DEFAULTS, random.Random(7)) - now for a, _ in SCHEDULE]
    again = [next_attempt(a, now, DEFAULTS, random.Random(7)) - now for a, _ in SCHEDULE]
    assert first == again
    for (_, wait), got in zip(SCHEDULE, first, strict=True):
        assert wait * (1 - JITTER) <= got <= wait * (1 + JITTER)


def test_a_known_seed_gives_known_times() -> None:
    """Pinned: a change of formula (or of how the rng is used) shows up here."""
    rng = random.Random(42)
    waits = [round(next_attempt(a, 0.0, DEFAULTS, rng), 3) for a in range(1, 7)]
    assert waits == [308.366, 543.001, 1146.007, 2267.141, 4189.177, 4141.36]


def test_base_delay_grows_monotonically_up_to_the_cap() -> None:
    waits = [base_delay(a, DEFAULTS) for a in range(1, 40)]
    assert waits == sorted(waits)
    assert max(waits) == DEFAULTS.max_retry
    assert waits[-1] == DEFAULTS.max_retry


@pytest.mark.parametrize("attempts", [0, -3])
def test_attempts_below_one_count_as_one(attempts: int) -> None:
    assert base_delay(attempts, DEFAULTS) == DEFAULTS.first_retry


@pytest.mark.parametrize("attempts", [63, 64, 1_000, 10**9])
def test_huge_attempt_counts_stay_at_the_cap(attempts: int) -> None:
    assert base_delay(attempts, DEFAULTS) == DEFAULTS.max_retry
    got = next_attempt(attempts, 0.0, DEFAULTS, random.Random(1))
    assert got <= DEFAULTS.max_retry * (1 + JITTER)


def test_jitter_stays_in_bounds_and_actually_spreads() -> None:
    rng = random.Random(2024)
    now = 500.0
    waits = [next_attempt(10, now, DEFAULTS, rng) - now for _ in range(5_000)]
    low, high = DEFAULTS.max_retry * (1 - JITTER), DEFAULTS.max_retry * (1 + JITTER)
    assert all(low <= w <= high for w in waits)
    assert min(waits) < DEFAULTS.max_retry * 0.92  # both ends of the range are used
    assert max(waits) > DEFAULTS.max_retry * 1.08
    assert len({round(w, 3) for w in waits}) > 4_000


def test_next_attempt_is_always_in_the_future() -> None:
    rng = random.Random(3)
    for attempts in range(1, 30):
        assert next_attempt(attempts, 1_000.0, DEFAULTS, rng) > 1_000.0


def test_custom_settings_change_the_schedule() -> None:
    settings = DeliverySettings(first_retry=60.0, max_retry=300.0)
    assert [base_delay(a, settings) for a in range(1, 6)] == [60.0, 120.0, 240.0, 300.0, 300.0]


def test_first_retry_above_max_retry_is_capped() -> None:
    settings = DeliverySettings(first_retry=900.0, max_retry=600.0)
    assert base_delay(1, settings) == 600.0


@pytest.mark.parametrize(
    ("age", "expired"),
    [(0.0, False), (5 * DAY - 1, False), (5 * DAY, True), (6 * DAY, True), (-10.0, False)],
)
def test_expiry_at_the_lifetime(age: float, expired: bool) -> None:
    received = 1_800_000_000.0
    assert is_expired(received, received + age, DEFAULTS) is expired


@pytest.mark.parametrize(
    ("age", "warned", "due"),
    [
        (0.0, False, False),
        (4 * HOUR - 1, False, False),
        (4 * HOUR, False, True),
        (2 * DAY, False, True),
        (4 * HOUR, True, False),  # once only
        (2 * DAY, True, False),
        (5 * DAY, False, False),  # expired: a failure DSN instead
    ],
)
def test_delay_warning(age: float, warned: bool, due: bool) -> None:
    received = 1_800_000_000.0
    assert delay_warning_due(received, received + age, warned, DEFAULTS) is due


def test_delay_warning_zero_turns_warnings_off() -> None:
    settings = DeliverySettings(delay_warning=0.0)
    assert not delay_warning_due(0.0, 3 * DAY, False, settings)


def test_delay_warning_past_lifetime_never_fires() -> None:
    settings = DeliverySettings(delay_warning=6 * DAY)
    assert not any(delay_warning_due(0.0, t * HOUR, False, settings) for t in range(0, 24 * 7))


def test_a_recipient_that_never_gets_through(fake_clock: FakeClock) -> None:
    """The scheduler's loop with a fake clock: about 110 attempts, one warning, then expiry."""
    rng = random.Random(99)
    received = fake_clock.time()
    attempts = 0
    warned_at: list[float] = []
    waits: list[float] = []
    while True:
        attempts += 1  # the attempt fails now
        now = fake_clock.time()
        if is_expired(received, now, DEFAULTS):
            break
        if delay_warning_due(received, now, bool(warned_at), DEFAULTS):
            warned_at.append(now - received)
        due = next_attempt(attempts, now, DEFAULTS, rng)
        waits.append(due - now)
        fake_clock.advance(due - now)
    assert len(warned_at) == 1
    assert 4 * HOUR <= warned_at[0] < 4 * HOUR + DEFAULTS.max_retry * (1 + JITTER)
    assert 100 <= attempts <= 125
    assert fake_clock.time() - received < 5 * DAY + DEFAULTS.max_retry * (1 + JITTER)
    assert max(waits) <= DEFAULTS.max_retry * (1 + JITTER)

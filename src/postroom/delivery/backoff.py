"""Retry times, queue lifetime and delay warnings: pure functions, clock values passed in.

After the n-th failed attempt the next one is due ``first_retry * 2**(n-1)`` seconds later,
capped at ``max_retry``, then spread by ±``JITTER`` (drawn from the ``random.Random`` the
caller passes) so that the mail deferred by one outage does not come back all at once.
The first attempt is immediate (the store makes a new message due at once). With the
defaults (``first_retry`` 300 s, ``max_retry`` 4000 s, ``lifetime`` 5 d, ``delay_warning``
4 h), without jitter:

=========  ==================  ===================================
attempts   wait before next    next attempt, after arrival
=========  ==================  ===================================
1          5 min               5 min
2          10 min              15 min
3          20 min              35 min
4          40 min              1 h 15 min
5          66 min 40 s (cap)   2 h 21 min 40 s
6 and on   66 min 40 s         +66 min 40 s each (about 110 in 5 d)
=========  ==================  ===================================

With jitter each wait lies in ``[wait * (1 - JITTER), wait * (1 + JITTER)]``, so the
longest wait is ``max_retry * (1 + JITTER)`` (73 min 20 s with the defaults).

A recipient still deferred ``lifetime`` seconds after arrival has expired: it is bounced
with a failure DSN (Postfix's ``maximal_queue_lifetime``). Once, when it has waited
``delay_warning`` seconds (0 turns warnings off) and has not expired, the sender may get a
delay DSN (Postfix's ``delay_warning_time``).
"""

from __future__ import annotations

import random
from typing import Final

from postroom.config.settings import DeliverySettings

__all__ = ["JITTER", "base_delay", "delay_warning_due", "is_expired", "next_attempt"]

JITTER: Final = 0.10
"""The spread of each wait: ±10 %."""

# 2**62 times any positive first_retry is past max_retry; the cap keeps the power finite.
_MAX_DOUBLINGS: Final = 62


def base_delay(attempts: int, settings: DeliverySettings) -> float:
    """The wait after ``attempts`` failed attempts, before jitter (attempts < 1 count as 1)."""
    doublings = min(max(attempts, 1) - 1, _MAX_DOUBLINGS)
    return min(settings.first_retry * 2.0**doublings, settings.max_retry)


def next_attempt(
    attempts: int, now: float, settings: DeliverySettings, rng: random.Random
) -> float:
    """When to try again after the ``attempts``-th failed attempt, which ended at ``now``."""
    return now + base_delay(attempts, settings) * rng.uniform(1.0 - JITTER, 1.0 + JITTER)


def is_expired(received_at: float, now: float, settings: DeliverySettings) -> bool:
    """Has a message that arrived at ``received_at`` outlived the queue lifetime?"""
    return now - received_at >= settings.lifetime


def delay_warning_due(
    received_at: float, now: float, already_warned: bool, settings: DeliverySettings
) -> bool:
    """Should a delay DSN go out now? At most once per recipient, never after expiry."""
    return (
        not already_warned
        and settings.delay_warning > 0
        and now - received_at >= settings.delay_warning
        and not is_expired(received_at, now, settings)
    )

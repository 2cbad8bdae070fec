"""Readiness: which parts of a running server are failing now, for ``/readyz`` and the log.

A part (a supervised task, the scheduler's store writes, the store itself) reports a
problem when it fails and clears it when it works again; a problem stays until then.
One ``Readiness`` is made by the composition root and passed to every part that reports.
It also keeps the latest failures, cleared or not, for ``postroom status``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from postroom.clock import Clock

__all__ = ["Fault", "Problem", "Readiness"]

_FAULTS_KEPT = 20


@dataclass(frozen=True, slots=True)
class Problem:
    """One failing part: what failed last, since when, and how often in a row."""

    part: str
    reason: str
    since: float  # wall time of the first failure in this run of failures
    failures: int


@dataclass(frozen=True, slots=True)
class Fault:
    """One failure of a part, as it was reported."""

    part: str
    reason: str
    at: float  # wall time


class Readiness:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._problems: dict[str, Problem] = {}
        self._faults: deque[Fault] = deque(maxlen=_FAULTS_KEPT)

    def fail(self, part: str, reason: str) -> None:
        """``part`` failed (again); ``reason`` is one line for an operator."""
        known = self._problems.get(part)
        now = self._clock.time()
        self._faults.append(Fault(part, reason, now))
        since = known.since if known is not None else now
        failures = known.failures + 1 if known is not None else 1
        self._problems[part] = Problem(part, reason, since, failures)

    def ok(self, part: str) -> None:
        """``part`` works again."""
        self._problems.pop(part, None)

    @property
    def ready(self) -> bool:
        return not self._problems

    def problems(self) -> list[Problem]:
        return sorted(self._problems.values(), key=lambda p: p.part)

    def faults(self) -> list[Fault]:
        """The latest failures (at most 20), newest first, including parts that work
        again."""
        return list(reversed(self._faults))

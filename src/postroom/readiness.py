"""Readiness: which parts of a running server are failing now, for ``/readyz`` and the log.

A part (a supervised task, the scheduler's store writes, the store itself) reports a
problem when it fails and clears it when it works again; a problem stays until then.
One ``Readiness`` is made by the composition root and passed to every part that reports.
It also keeps the latest failures, cleared or not, for ``postroom status``.
A part that cannot report its own failure (a listening socket closed under the server)
is watched instead: its check is asked each time readiness is read.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from postroom.clock import Clock

__all__ = ["Check", "Fault", "Problem", "Readiness"]

Check = Callable[[], str | None]
"""A watched part's state now: None when it works, else why not (one line)."""

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
        self._watched: dict[str, Check] = {}

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

    def watch(self, part: str, check: Check) -> None:
        """Ask ``check`` whenever readiness is read; a reason it gives is a failure of
        ``part`` (and a fault kept for ``postroom status``), None clears it."""
        self._watched[part] = check

    @property
    def ready(self) -> bool:
        return not self.problems()

    def problems(self) -> list[Problem]:
        for part, check in self._watched.items():
            reason = check()
            if reason is None:
                self.ok(part)
            elif (known := self._problems.get(part)) is None or known.reason != reason:
                self.fail(part, reason)
        return sorted(self._problems.values(), key=lambda p: p.part)

    def faults(self) -> list[Fault]:
        """The latest failures (at most 20), newest first, including parts that work
        again."""
        return list(reversed(self._faults))

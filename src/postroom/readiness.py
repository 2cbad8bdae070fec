"""Readiness: which parts of a running server are failing now, for ``/readyz`` and the log.

A part (a supervised task, the scheduler's store writes, the store itself) reports a
problem when it fails and clears it when it works again; a problem stays until then.
One ``Readiness`` is made by the composition root and passed to every part that reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from postroom.clock import Clock

__all__ = ["Problem", "Readiness"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One failing part: what failed last, since when, and how often in a row."""

    part: str
    reason: str
    since: float  # wall time of the first failure in this run of failures
    failures: int


class Readiness:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._problems: dict[str, Problem] = {}

    def fail(self, part: str, reason: str) -> None:
        """``part`` failed (again); ``reason`` is one line for an operator."""
        known = self._problems.get(part)
        since = known.since if known is not None else self._clock.time()
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

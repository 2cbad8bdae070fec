"""The overview's chart as server-side SVG: no script, no assets from anywhere.

Stacked bars per time slot, one colour per outcome, with a text table beside it in the
page for screen readers (the SVG has a title and is described by that table).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from postroom.store.models import AttemptCount

__all__ = ["COLOURS", "Bar", "Chart", "bar_chart", "totals_by"]

# Outcome -> colour with >= 3:1 contrast on white (WCAG 1.4.11, graphical objects).
COLOURS = {
    "sent": "#0969da",
    "delivered": "#1a7f37",
    "deferred": "#9a6700",
    "bounced": "#cf222e",
    "complained": "#8250df",
}
_WIDTH, _HEIGHT = 720, 160


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    label: str  # <title> of the rectangle


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    peak: int
    totals: dict[str, int]  # per outcome over the whole window


def bar_chart(counts: list[AttemptCount], start: float, end: float, bucket: float) -> Chart:
    slots = max(1, int((end - start) // bucket) + 1)
    first = (start // bucket) * bucket
    per_slot: list[dict[str, int]] = [{} for _ in range(slots)]
    totals: dict[str, int] = {}
    for row in counts:
        index = int((row.slot - first) // bucket)
        outcome = row.disposition
        if 0 <= index < slots:
            per_slot[index][outcome] = per_slot[index].get(outcome, 0) + row.count
        totals[outcome] = totals.get(outcome, 0) + row.count
    peak = max((sum(slot.values()) for slot in per_slot), default=0)
    width = _WIDTH / slots
    bars: list[Bar] = []
    for index, slot in enumerate(per_slot):
        y = float(_HEIGHT)
        for outcome, colour in COLOURS.items():
            count = slot.get(outcome, 0)
            if not count:
                continue
            height = _HEIGHT * count / peak
            y -= height
            bars.append(
                Bar(index * width, y, max(width - 1, 1), height, colour, f"{count} {outcome}")
            )
    return Chart(_WIDTH, _HEIGHT, bars, peak, totals)


def totals_by(
    counts: list[AttemptCount], key: Callable[[AttemptCount], str]
) -> list[tuple[str, dict[str, int]]]:
    """Per ``key`` (the mailer, the sender domain): attempts of each outcome, by name."""
    totals: dict[str, dict[str, int]] = {}
    for row in counts:
        outcomes = totals.setdefault(key(row), {})
        outcomes[row.disposition] = outcomes.get(row.disposition, 0) + row.count
    return sorted(totals.items())

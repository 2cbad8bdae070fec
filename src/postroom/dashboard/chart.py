"""The overview's chart as server-side SVG: no script, no assets from anywhere.

Stacked bars per time slot, one colour per outcome, with a text table beside it in the
page for screen readers (the SVG has a title and is described by that table).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COLOURS", "Bar", "Chart", "bar_chart"]

# Outcome -> colour with >= 3:1 contrast on white (WCAG 1.4.11, graphical objects).
COLOURS = {"delivered": "#1a7f37", "deferred": "#9a6700", "bounced": "#cf222e"}
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


def bar_chart(
    counts: list[tuple[float, str, str, int]], start: float, end: float, bucket: float
) -> Chart:
    slots = max(1, int((end - start) // bucket) + 1)
    first = (start // bucket) * bucket
    per_slot: list[dict[str, int]] = [{} for _ in range(slots)]
    totals: dict[str, int] = {}
    for at, _mailer, disposition, count in counts:
        index = int((at - first) // bucket)
        if 0 <= index < slots:
            per_slot[index][disposition] = per_slot[index].get(disposition, 0) + count
        totals[disposition] = totals.get(disposition, 0) + count
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

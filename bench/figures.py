"""Results: samples (one run each), rows (one system), sections (one workload)."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Literal

__all__ = ["DISTURBED", "Metric", "Row", "Sample", "Section", "Summary", "ratio"]

Status = Literal["ok", "failed", "unsupported"]

# Warnings that start so say the host was not the benchmark's alone during the run.
DISTURBED = ("host was", "other processes used")


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    title: str  # column header, unit included: "msgs/s"
    higher_is_better: bool
    digits: int = 0  # decimals shown


@dataclass
class Sample:
    """One run of one system: its figures, and what went wrong or looked suspect."""

    metrics: dict[str, float]
    warnings: list[str] = field(default_factory=list)

    @property
    def disturbed(self) -> bool:
        return any(w.startswith(DISTURBED) for w in self.warnings)


@dataclass(frozen=True, slots=True)
class Summary:
    median: float
    low: float
    high: float
    runs: int


@dataclass
class Row:
    name: str
    label: str
    durable: bool
    status: Status = "ok"
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    note: str = ""

    def summary(self, key: str) -> Summary | None:
        values = [s.metrics[key] for s in self.samples if key in s.metrics]
        if not values:
            return None
        return Summary(statistics.median(values), min(values), max(values), len(values))

    def warnings(self) -> list[str]:
        seen: list[str] = []
        for sample in self.samples:
            for warning in sample.warnings:
                if warning not in seen:
                    seen.append(warning)
        return seen


@dataclass
class Section:
    key: str  # "accept-1"
    title: str
    description: str  # the workload in one line: sessions, messages, size
    metrics: list[Metric]
    primary: str  # the metric the ratio is taken on
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The row the ratios are taken against (its median divided by each other row's);
    # None: no ratio column.
    reference: str | None = "postroom"

    def row(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.name == name), None)

    def metric(self, key: str) -> Metric:
        return next(m for m in self.metrics if m.key == key)

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        for row_json, row in zip(out["rows"], self.rows, strict=True):
            summaries = {m.key: row.summary(m.key) for m in self.metrics}
            row_json["summary"] = {k: asdict(v) for k, v in summaries.items() if v is not None}
            row_json["postroom_ratio"] = ratio(self, row.name)
        return out


def ratio(section: Section, name: str) -> float | None:
    """The reference row's median (postroom's, unless the section names another) divided
    by this system's median, on the section's primary metric."""
    if section.reference is None:
        return None
    ours = section.row(section.reference)
    theirs = section.row(name)
    if ours is None or theirs is None or ours.status != "ok" or theirs.status != "ok":
        return None
    mine = ours.summary(section.primary)
    other = theirs.summary(section.primary)
    if mine is None or other is None or other.median == 0:
        return None
    return mine.median / other.median

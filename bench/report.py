"""The table: Markdown for people (printed, and in docs/performance.md), JSON for tools."""

from __future__ import annotations

from dataclasses import dataclass

from bench.figures import Metric, Row, Section, ratio

__all__ = ["Target", "check_targets", "render", "render_machine"]

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Target:
    what: str
    wanted: float  # the ratio asked for
    measured: float | None  # postroom's ratio in this run; None: not measurable
    against: str  # which peer, or why it is not measurable

    @property
    def verdict(self) -> str:
        if self.measured is None:
            return "not measurable yet"
        return "met" if self.measured >= self.wanted else "not met"

    def to_json(self) -> dict[str, object]:
        return {
            "what": self.what,
            "wanted": self.wanted,
            "measured": self.measured,
            "against": self.against,
            "verdict": self.verdict,
        }


def _number(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def _cell(row: Row, metric: Metric) -> str:
    summary = row.summary(metric.key)
    if summary is None:
        return "—"
    median = _number(summary.median, metric.digits)
    if summary.runs == 1 or summary.low == summary.high:
        return median
    low, high = _number(summary.low, metric.digits), _number(summary.high, metric.digits)
    return f"{median} ({low}-{high})"


def _ratio_cell(section: Section, row: Row) -> str:
    if row.name == section.reference:
        return "—"
    value = ratio(section, row.name)
    return "—" if value is None else f"{value:.2f}x"


def _notes(row: Row) -> str:
    parts = []
    if row.note:
        parts.append(row.note)
    if row.status == "failed":
        parts.append("FAILED: " + "; ".join(row.errors[:2]))
    elif row.errors:
        parts.append(f"{len(row.errors)} run(s) failed: {row.errors[0]}")
    parts += [f"WARNING: {w}" for w in row.warnings()]
    return "; ".join(parts).replace("|", "/").replace("\n", " ")


def render_section(section: Section) -> str:
    primary = section.metric(section.primary)
    ahead = "above" if primary.higher_is_better else "below"
    ours = section.reference
    ratios = ours is not None
    ratio_note = (
        f"{ours} ÷ this: {ours}'s median {primary.title} divided by this row's, "
        f"same run ({ahead} 1: {ours} is ahead)."
        if ratios
        else ""
    )
    header = ["system", "durable", *[m.title for m in section.metrics]]
    header += [f"{ours} ÷ this", "notes"] if ratios else ["notes"]
    align = ["---", ":---:", *["---:" for _ in section.metrics], *(["---:"] if ratios else [])]
    align.append("---")
    lines = [f"### {section.title}", "", section.description, *([ratio_note] if ratios else [])]
    lines.append("")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(align) + "|")
    for row in section.rows:
        if row.status == "unsupported":
            cells = ["not yet supported"] + ["" for _ in section.metrics[1:]]
            ratio_text = "—"
        else:
            cells = [_cell(row, m) for m in section.metrics]
            ratio_text = _ratio_cell(section, row)
        durable = "yes" if row.durable else "no"
        tail = [ratio_text, _notes(row)] if ratios else [_notes(row)]
        lines.append("| " + " | ".join([row.label, durable, *cells, *tail]) + " |")
    lines += [f"\n{note}" for note in section.notes]
    return "\n".join(lines) + "\n"


def _best(section: Section, names: list[str]) -> tuple[str, float] | None:
    """The peer among ``names`` with the highest median on the primary metric."""
    best: tuple[str, float] | None = None
    for name in names:
        row = section.row(name)
        summary = row.summary(section.primary) if row and row.status == "ok" else None
        if summary is not None and (best is None or summary.median > best[1]):
            best = (name, summary.median)
    return best


def _cpu_ratio(section: Section, name: str) -> float | None:
    """``name``'s median server CPU per message over postroom's (above 1: postroom spends
    less per message)."""
    ours, theirs = section.row("postroom"), section.row(name)
    if ours is None or theirs is None:
        return None
    mine, other = ours.summary("server_ms_per_msg"), theirs.summary("server_ms_per_msg")
    if mine is None or other is None or mine.median == 0:
        return None
    return other.median / mine.median


def check_targets(sections: list[Section]) -> list[Target]:
    """The issue's targets, each a same-run ratio."""
    targets: list[Target] = []
    for section in sections:
        if section.key.startswith("accept"):
            best = _best(section, ["postfix-hold", "haraka-fsync"])
            if best is not None:
                targets.append(
                    Target(
                        f"{section.title}: postroom ≥ 1.5x the best durable peer",
                        1.5,
                        ratio(section, best[0]),
                        best[0],
                    )
                )
                targets.append(
                    Target(
                        f"{section.title}: the same peer's server CPU per message ÷"
                        " postroom's (what a busy host disturbs least; not the target)",
                        1.5,
                        _cpu_ratio(section, best[0]),
                        best[0],
                    )
                )
            if section.row("aiosmtpd-null") is not None:
                targets.append(
                    Target(
                        f"{section.title}: postroom ≥ 1.0x aiosmtpd that stores nothing",
                        1.0,
                        ratio(section, "aiosmtpd-null"),
                        "aiosmtpd-null",
                    )
                )
        targets += _application_targets(section)
        if section.key.startswith("pg-accept"):
            targets.append(
                Target(
                    f"{section.title}: PostgreSQL ≥ 0.8x SQLite",
                    0.8,
                    ratio(section, "postroom"),
                    "postroom (SQLite)",
                )
            )
        if section.key == "pg-delivery":
            for row in section.rows[1:]:
                scaling = row.summary("scaling")
                targets.append(
                    Target(
                        f"Delivery, {row.label} on one PostgreSQL: ≥ 0.8 x N x one node",
                        0.8,
                        None if scaling is None else scaling.median,
                        "nodes-1" if scaling is not None else "no one-node figure",
                    )
                )
        if section.key.startswith("relay") and section.row("postfix-relay") is not None:
            postroom = section.row("postroom")
            unsupported = postroom is None or postroom.status == "unsupported"
            targets.append(
                Target(
                    f"{section.title}: postroom ≥ 2x Postfix",
                    2.0,
                    None if unsupported else ratio(section, "postfix-relay"),
                    "postroom cannot deliver yet" if unsupported else "postfix-relay",
                )
            )
    return targets


def _application_targets(section: Section) -> list[Target]:
    """The targets of the workloads applications produce: submission with TLS and AUTH
    against Postfix + Dovecot, and local delivery into Maildir against Postfix."""
    targets: list[Target] = []
    if section.key == "local" and section.row("postfix-virtual") is not None:
        targets.append(
            Target(
                f"{section.title}: postroom ≥ 1.5x Postfix",
                1.5,
                ratio(section, "postfix-virtual"),
                "postfix-virtual",
            )
        )
    peer = "postfix-dovecot-sha512crypt"
    if section.key.startswith("submission") and section.row(peer) is not None:
        wanted = 1.5 if section.key.endswith("-1") else 2.0
        targets.append(
            Target(
                f"{section.title}: postroom ≥ {wanted}x Postfix + Dovecot (SHA512-CRYPT)",
                wanted,
                ratio(section, peer),
                peer,
            )
        )
    return targets


def render_targets(targets: list[Target]) -> str:
    if not targets:
        return ""
    lines = ["### Targets (same-run ratios)", ""]
    lines += ["| target | measured | against | verdict |", "|---|---:|---|---|"]
    for target in targets:
        measured = "—" if target.measured is None else f"{target.measured:.2f}x"
        lines.append(f"| {target.what} | {measured} | {target.against} | {target.verdict} |")
    return "\n".join(lines) + "\n"


def render_machine(machine: dict[str, object], versions: dict[str, str | None]) -> str:
    disk = machine["disk"]
    assert isinstance(disk, dict)
    journal = {True: "with a journal", False: "without a journal", None: ""}[disk["journal"]]
    memory = int(str(machine["memory_bytes"])) / (1024 * MIB)
    storage = f"{disk['fs_type']} {journal} on {disk['device']}".replace("  ", " ")
    if "append_fsync_ms" in disk:  # results from before the harness measured it lack it
        storage += (
            f" (4 KiB appended and fsync'ed: {disk['append_fsync_ms']:.2f} ms;"
            f" a new 4 KiB file fsync'ed: {disk['new_file_fsync_ms']:.2f} ms)"
        )
    parts = [
        f"{machine['cores']} cores ({machine['cpu_model']})",
        f"{memory:.1f} GiB memory",
        storage,
        f"Python {machine['python']}",
        f"{machine['os']}, kernel {machine['kernel']}",
    ]
    peers = ", ".join(f"{k} {v}" for k, v in versions.items() if v)
    return "Machine: " + "; ".join(parts) + f".\nVersions: {peers}.\n"


def render(
    sections: list[Section],
    targets: list[Target],
    machine: dict[str, object],
    versions: dict[str, str | None],
    header_notes: list[str],
) -> str:
    out = [render_machine(machine, versions)]
    out += [note + "\n" for note in header_notes]
    out += [render_section(section) for section in sections]
    out.append(render_targets(targets))
    return "\n".join(part for part in out if part)

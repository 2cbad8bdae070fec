"""``python bench/run.py``: every comparison, one table."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bench import install
from bench.context import Context
from bench.figures import Row, Sample, Section
from bench.host import NCPU, describe_machine, raise_fd_limit
from bench.load import Load
from bench.paths import RESULTS
from bench.procs import SetupError
from bench.report import check_targets, render
from bench.systems import SYSTEM_NAMES, build_systems
from bench.systems.base import RECIPIENT, System
from bench.systems.haraka import HarakaSystem
from bench.systems.postgres import PostgresCluster, postgres_cluster, postgres_version
from bench.systems.postroom import Builds, PostroomSystem, default_python, twin, with_twins
from bench.systems.submission import PASSWORD, USERNAME, PostfixDovecotSystem
from bench.tlsload import SubmissionLoad
from bench.workloads.accept import ACCEPT_METRICS, LARGE_METRICS, run_accept
from bench.workloads.idle import IDLE_METRICS, run_idle
from bench.workloads.latency import LATENCY_METRICS, run_latency
from bench.workloads.local import LOCAL_LABELS, LOCAL_METRICS, LocalStart, locals_, run_local
from bench.workloads.nodes import (
    NODES_METRICS,
    node_row_name,
    nodes_model,
    run_nodes,
    scale_against_one,
)
from bench.workloads.relay import RELAY_LABELS, RELAY_METRICS, RelayStart, relays, run_relay
from bench.workloads.submission import SUBMISSION_METRICS, run_submission

__all__ = ["main"]

T = TypeVar("T")

WORKLOADS = (
    "accept",
    "relay",
    "large",
    "idle",
    "latency",
    "pg-accept",
    "pg-delivery",
    "submission",
    "local",
)
KIB = 1024
MIB = 1024 * KIB
IDLE_SYSTEMS = (
    "postroom",
    twin("postroom"),
    "smtp-sink",
    "haraka-fsync",
    "aiosmtpd-fsync",
)
ACCEPT_ONLY = ("postroom-local",)  # run in the accept workloads only
# The submission workload's peers, and how many logins each gets at most: Dovecot's
# ARGON2ID (64 MiB, 3 passes) verifies about a dozen logins a second here, so that row
# sends fewer messages (its rate is what is compared, not its count).
SUBMISSION_PEERS = {"postfix-dovecot-sha512crypt": None, "postfix-dovecot-argon2id": 300}
DOVECOT_PEERS = ("postfix-dovecot-sha512crypt", "postfix-dovecot-argon2id")
HARAKA_AUTH = "haraka-auth"  # Haraka with tls and auth/flat_file: the submission peer
CONDITION = (
    "Each run starts a fresh server in a fresh directory; between runs the files are moved "
    "aside, not deleted, and deleted once after the last run (deleting thousands of files "
    "slows file creation on this ext4 for minutes). postroom keeps its queue in one SQLite "
    "file; Postfix, Haraka-fsync and aiosmtpd-fsync write one file per message."
)


@dataclass(frozen=True)
class Plan:
    runs: int
    messages: int
    sessions: int
    per_connection: int  # relay and submission, mode b
    accept_per_connection: int  # accept and pg-accept, mode b
    relay_messages: int
    large_messages: int
    large_size: int
    idle_connections: int
    latency_seconds: float
    latency_rate: float | None
    retries: int
    submission_messages: int
    submission_modes: tuple[str, ...]
    nodes: tuple[int, ...]  # pg-delivery: node counts
    node_cpu: float | None  # pg-delivery: each node's CPU cap (cgroup), None: none


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark postroom against smtp-sink, Postfix, Haraka and aiosmtpd "
        "with Postfix's smtp-source as the load; prints one table.",
    )
    parser.add_argument("--quick", action="store_true", help="small workloads, one run")
    parser.add_argument("--runs", type=int, help="runs per system (default 3; --quick: 1)")
    parser.add_argument(
        "--only", help=f"comma-separated workloads to run (default all: {','.join(WORKLOADS)})"
    )
    parser.add_argument(
        "--systems",
        help=f"comma-separated systems (default all: {','.join(SYSTEM_NAMES)},postfix-relay; "
        "postroom-local runs in the accept workloads only)",
    )
    parser.add_argument("--messages", type=int, help="accept: messages (default 20000)")
    parser.add_argument("--sessions", type=int, help="accept and relay: sessions (default 20)")
    parser.add_argument(
        "--per-connection",
        type=int,
        default=100,
        help="relay and submission: messages per connection, mode b (default 100)",
    )
    parser.add_argument(
        "--accept-per-connection",
        type=int,
        default=1000,
        help="accept: messages per connection, mode b (default 1000: with 20,000 messages"
        " and 20 sessions, each session sends all of its messages over one connection)",
    )
    parser.add_argument("--relay-messages", type=int, help="relay: messages (default 10000)")
    parser.add_argument("--large-messages", type=int, help="large: messages (default 50)")
    parser.add_argument("--large-mib", type=int, help="large: MiB per message (default 20)")
    parser.add_argument("--idle", type=int, help="idle: connections (default 2000)")
    parser.add_argument("--latency-seconds", type=float, help="latency: length (default 10)")
    parser.add_argument(
        "--latency-rate", type=float, help="latency: msgs/s (default: half of postroom's accept)"
    )
    parser.add_argument(
        "--submission-messages", type=int, help="submission: messages (default 4000)"
    )
    parser.add_argument(
        "--submission-modes",
        default="starttls,tls",
        help="submission: starttls (587-style), tls (465-style), or both (default)",
    )
    parser.add_argument(
        "--nodes",
        default="1,2,3",
        help="pg-delivery: comma-separated node counts (default 1,2,3; 1 must be among them)",
    )
    parser.add_argument(
        "--node-cpu",
        type=float,
        help="pg-delivery: cap each node (and the sink) at this many CPUs, each in a cgroup"
        " of its own, so that N nodes stand for N machines of one size (default: no cap)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where latest.* go")
    parser.add_argument("--workdir", type=Path, help="run files (default: a new temp dir)")
    parser.add_argument(
        "--keep-workdir",
        action="store_true",
        help="do not delete run files (a later invocation into the same --workdir numbers "
        "its runs after them)",
    )
    parser.add_argument("--no-install", action="store_true", help="fail instead of installing")
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=10.0,
        help="wait before each run until the host is under this %% busy (100: don't wait)",
    )
    parser.add_argument("--quiet-max-wait", type=float, default=120.0, help="seconds")
    parser.add_argument(
        "--retries",
        type=int,
        help="repeat a run disturbed by other processes up to N times (default 2; --quick: 0)",
    )
    parser.add_argument("--postroom-python", type=Path, help="interpreter with postroom")
    parser.add_argument(
        "--compare-python",
        type=Path,
        help="interpreter with another build of postroom: its rows follow postroom's in the "
        "accept, submission, local, relay, large, idle and latency workloads, run for run, "
        "with the ratio of the two builds (an A/B in one invocation; not the PostgreSQL ones)",
    )
    parser.add_argument(
        "--postroom-workers",
        type=int,
        default=NCPU,
        help=f"postroom's accepting processes, its `workers` setting (default: the cores, {NCPU})",
    )
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    quick = bool(args.quick)

    def pick(value: int | float | None, full: float, small: float) -> float:
        return float(value) if value is not None else (small if quick else full)

    return Plan(
        runs=int(pick(args.runs, 3, 1)),
        messages=int(pick(args.messages, 20000, 2000)),
        sessions=int(pick(args.sessions, 20, 20)),
        per_connection=args.per_connection,
        accept_per_connection=args.accept_per_connection,
        relay_messages=int(pick(args.relay_messages, 10000, 1000)),
        large_messages=int(pick(args.large_messages, 50, 10)),
        large_size=int(pick(args.large_mib, 20, 2)) * MIB,
        idle_connections=int(pick(args.idle, 2000, 200)),
        latency_seconds=pick(args.latency_seconds, 10.0, 3.0),
        latency_rate=args.latency_rate,
        retries=int(pick(args.retries, 2, 0)),
        submission_messages=int(pick(args.submission_messages, 4000, 400)),
        submission_modes=tuple(m for m in args.submission_modes.split(",") if m),
        nodes=tuple(int(n) for n in args.nodes.split(",")),
        node_cpu=args.node_cpu,
    )


def _install(systems: list[System], allow: bool, progress: Callable[[str], None]) -> dict[str, str]:
    """Install what the chosen systems need; {system name: why it cannot run}."""
    install.ensure_postfix(allow)  # smtp-source and smtp-sink: nothing runs without them
    broken: dict[str, str] = {}
    needs = {
        "haraka": [s.name for s in systems if s.name.startswith("haraka")],
        "aiosmtpd": [s.name for s in systems if s.name.startswith("aiosmtpd")],
    }
    steps = {"haraka": install.ensure_haraka, "aiosmtpd": install.ensure_aiosmtpd}
    for peer, names in needs.items():
        if not names:
            continue
        progress(f"checking {peer} ...")
        try:
            steps[peer](allow)
        except (SetupError, OSError, subprocess.TimeoutExpired) as exc:
            for name in names:
                broken[name] = f"not installed: {exc}"
    return broken


def _attempts(ctx: Context, once: Callable[[], Sample], retries: int) -> Sample:
    """One run; repeated (up to ``retries`` more times) while other processes disturbed it.

    Kept: the first undisturbed attempt, else the least disturbed one, with its warnings.
    """
    tried: list[Sample] = []
    for attempt in range(retries + 1):
        sample = once()
        shown = {k: round(v, 2) for k, v in sample.metrics.items() if k in _SHOWN}
        ctx.progress(f"  {shown} {'; '.join(sample.warnings)}")
        if not sample.disturbed:
            return sample
        tried.append(sample)
        if attempt < retries:
            ctx.progress("  disturbed by other processes: run again")
    best = min(tried, key=lambda s: s.metrics.get("others_pct", 100.0))
    if len(tried) > 1:
        best.warnings.append(f"least disturbed of {len(tried)} attempts")
    return best


def _run_rows(
    ctx: Context,
    section: Section,
    entries: list[tuple[str, Callable[[], Sample]]],
    plan: Plan,
) -> None:
    """Run every entry ``plan.runs`` times, interleaved (1 2 3 1 2 3 ...), into the rows."""
    runs, retries = plan.runs, plan.retries
    if not any(known is section for known in ctx.sections):
        ctx.sections.append(section)  # shown even if the harness is interrupted in it
    for run in range(1, runs + 1):
        for name, once in in_turn(entries, run):
            row = section.row(name)
            assert row is not None
            if row.status != "ok":
                continue
            ctx.progress(f"[{section.key}] run {run}/{runs}: {name}")
            try:
                sample = _attempts(ctx, once, retries)
            except Exception as exc:  # a failed run is a row note, not the end of the table
                row.errors.append(f"{type(exc).__name__}: {exc}".splitlines()[0])
                ctx.progress(f"  failed: {exc}")
                continue
            row.samples.append(sample)
    for row in section.rows:
        if row.status == "ok" and not row.samples:
            row.status = "failed"


def in_turn(entries: list[tuple[str, T]], run: int) -> list[tuple[str, T]]:
    """The order of run number ``run``: in even runs each postroom system and its
    ``--compare-python`` twin swap places, so each build goes first as often (a run
    leaves the host warmer or cooler for the next)."""
    order = list(entries)
    if run % 2:
        return order
    for index in range(len(order) - 1):
        if order[index + 1][0] == twin(order[index][0]):
            order[index], order[index + 1] = order[index + 1], order[index]
    return order


_SHOWN = {"msgs_per_s", "mib_per_s", "p50_ms", "p99_ms", "pss_idle_mib", "peak_rss_mib"}


def _rows_for(systems: list[System], broken: dict[str, str]) -> list[Row]:
    rows = []
    for system in systems:
        row = Row(system.name, system.label, system.durable)
        if system.name in broken:
            row.status = "failed"
            row.errors.append(broken[system.name])
        rows.append(row)
    return rows


def accept_sections(
    ctx: Context,
    plan: Plan,
    systems: list[System],
    broken: dict[str, str],
    *,
    key: str = "accept",
    title: str = "Accept",
    reference: str = "postroom",
) -> list[Section]:
    sections = []
    for per_connection in (1, plan.accept_per_connection):
        actual = min(per_connection, max(1, plan.messages // plan.sessions))
        words = "one message per connection" if actual == 1 else f"{actual} per connection"
        load = Load(plan.messages, plan.sessions, 4 * KIB, actual)
        section = Section(
            key=f"{key}-{actual}",
            title=f"{title}, {words}",
            reference=reference,
            description=(
                f"{plan.sessions} concurrent sessions, {plan.messages:,} messages of 4 KiB, "
                f"one recipient each, {actual} per connection; median of {plan.runs} run(s) "
                "(min-max)."
            ),
            metrics=ACCEPT_METRICS,
            primary="msgs_per_s",
            rows=_rows_for(systems, broken),
        )
        entries = [(s.name, _bind_accept(ctx, s, load, section.key, rss=False)) for s in systems]
        _run_rows(ctx, section, entries, plan)
        sections.append(section)
    return sections


def _bind_accept(
    ctx: Context, system: System, load: Load, label: str, *, rss: bool
) -> Callable[[], Sample]:
    return lambda: run_accept(ctx, system, load, label, single_process_rss=rss)


def large_section(
    ctx: Context, plan: Plan, systems: list[System], broken: dict[str, str]
) -> Section:
    size_mib = plan.large_size // MIB
    load = Load(plan.large_messages, plan.large_messages, plan.large_size, 1)
    section = Section(
        key="large",
        title=f"Large messages, {plan.large_messages} concurrent x {size_mib} MiB",
        description=(
            f"{plan.large_messages} concurrent sessions, one {size_mib} MiB message each; "
            f"peak RSS is VmHWM of the server process (not shown for Postfix, which runs a "
            f"process per connection); median of {plan.runs} run(s) (min-max)."
        ),
        metrics=LARGE_METRICS,
        primary="mib_per_s",
        rows=_rows_for(systems, broken),
    )
    entries = [(s.name, _bind_accept(ctx, s, load, "large", rss=True)) for s in systems]
    _run_rows(ctx, section, entries, plan)
    return section


def relay_sections(ctx: Context, plan: Plan, chosen: set[str], builds: Builds) -> list[Section]:
    available = relays(builds)
    names = [n for n in available if n in chosen]
    sections = []
    for per_connection in (1, plan.per_connection):
        actual = min(per_connection, max(1, plan.relay_messages // plan.sessions))
        load = Load(plan.relay_messages, plan.sessions, 4 * KIB, actual)
        section = Section(
            key=f"relay-{actual}",
            title=f"Relay to smtp-sink, {actual} message(s) per connection",
            description=(
                f"{plan.relay_messages:,} messages of 4 KiB submitted by {plan.sessions} "
                f"sessions ({actual} per connection), delivered to smtp-sink; timed from the "
                "first submission until the sink has received every message (then the queue "
                "must hold nothing undelivered). Server CPU includes the sink's. "
                f"Median of {plan.runs} run(s) (min-max)."
            ),
            metrics=RELAY_METRICS,
            primary="msgs_per_s",
        )
        entries = []
        for name in names:
            row = Row(name, RELAY_LABELS[name], durable=True)
            start = available[name]
            if start is None:
                row.status = "unsupported"
                row.note = "not yet supported"
            else:
                entries.append((name, _bind_relay(ctx, name, start, load, section.key)))
            section.rows.append(row)
        _run_rows(ctx, section, entries, plan)
        sections.append(section)
    return sections


def _bind_relay(
    ctx: Context, name: str, start: RelayStart, load: Load, label: str
) -> Callable[[], Sample]:
    return lambda: run_relay(ctx, name, start, load, label)


def local_section(ctx: Context, plan: Plan, chosen: set[str], builds: Builds) -> Section:
    """Mail for the local domain, from the mx port into Maildir, end to end."""
    available = locals_(builds)
    load = Load(plan.relay_messages, plan.sessions, 4 * KIB, 1)
    section = Section(
        key="local",
        title="Local delivery into Maildir, one message per connection",
        description=(
            f"{plan.relay_messages:,} messages of 4 KiB for the server's own domain, "
            f"{plan.sessions} sessions of smtp-source, one message per connection; timed "
            "from the first submission until every message is a file in the Maildir's "
            f"new/. Median of {plan.runs} run(s) (min-max)."
        ),
        metrics=LOCAL_METRICS,
        primary="msgs_per_s",
    )
    entries = []
    for name, start in available.items():
        if name in chosen or (name == "postfix-virtual" and "postfix-hold" in chosen):
            section.rows.append(Row(name, LOCAL_LABELS[name], durable=True))
            entries.append((name, _bind_local(ctx, name, start, load)))
    _run_rows(ctx, section, entries, plan)
    return section


def _bind_local(ctx: Context, name: str, start: LocalStart, load: Load) -> Callable[[], Sample]:
    return lambda: run_local(ctx, name, start, load, "local")


def _submission_systems(chosen: set[str], builds: Builds) -> list[System]:
    systems: list[System] = [
        PostroomSystem(builds.python, "held", builds.workers, submission=True),
        *(PostfixDovecotSystem(scheme) for scheme in ("SHA512-CRYPT", "ARGON2ID")),
        HarakaSystem(fsync=True, submission=True),
    ]
    return [s for s in with_twins(systems, builds.compare) if s.name in chosen]


def submission_sections(
    ctx: Context, plan: Plan, chosen: set[str], builds: Builds, *, allow: bool
) -> list[Section]:
    """STARTTLS (587-style) and implicit TLS (465-style), AUTH PLAIN on every connection,
    one message per connection and many; postroom against Postfix + Dovecot SASL."""
    systems = _submission_systems(chosen, builds)
    broken: dict[str, str] = {}
    try:
        loadgen = install.ensure_loadgen(allow)
        if any(s.name in DOVECOT_PEERS for s in systems):
            install.ensure_dovecot(allow)
    except (SetupError, OSError, subprocess.TimeoutExpired) as exc:
        if not isinstance(exc, SetupError) or "smtp-tls-source" in str(exc):
            raise
        broken = {name: f"not installed: {exc}" for name in DOVECOT_PEERS}
    if any(s.name == HARAKA_AUTH for s in systems):
        try:
            install.ensure_haraka(allow)
        except (SetupError, OSError, subprocess.TimeoutExpired) as exc:
            broken[HARAKA_AUTH] = f"not installed: {exc}"
    sections = []
    words = {"starttls": "STARTTLS (587-style)", "tls": "implicit TLS (465-style)"}
    for mode in plan.submission_modes:
        for per_connection in sorted({1, plan.per_connection}):
            actual = min(per_connection, max(1, plan.submission_messages // plan.sessions))
            count = plan.submission_messages * (1 if actual == 1 else 5)
            section = Section(
                key=f"submission-{mode}-{actual}",
                title=f"Submission, {words[mode]} + AUTH, {actual} message(s) per connection",
                description=(
                    f"{plan.sessions} concurrent sessions of smtp-tls-source, each connection: "
                    f"{words[mode]}, AUTH PLAIN, {actual} message(s) of 4 KiB, QUIT; "
                    f"{count:,} messages (fewer where the row says), TLS sessions resumed when "
                    f"the server allows it; delivery held. Median of {plan.runs} run(s) (min-max)."
                ),
                metrics=SUBMISSION_METRICS,
                primary="msgs_per_s",
                rows=_rows_for(systems, broken),
            )
            entries = []
            for system in systems:
                logins = SUBMISSION_PEERS.get(system.name)
                messages = count if logins is None else min(count, logins * actual)
                load = SubmissionLoad(
                    messages,
                    plan.sessions,
                    4 * KIB,
                    actual,
                    "starttls" if mode == "starttls" else "tls",
                    USERNAME,
                    PASSWORD,
                    sender=RECIPIENT,  # postroom's bench user may send as its own domain
                    recipient=RECIPIENT,
                )
                entries.append(
                    (system.name, _bind_submission(ctx, system, load, section.key, loadgen))
                )
            _run_rows(ctx, section, entries, plan)
            sections.append(section)
    return sections


def _bind_submission(
    ctx: Context, system: System, load: SubmissionLoad, label: str, loadgen: Path
) -> Callable[[], Sample]:
    return lambda: run_submission(ctx, system, load, label, loadgen)


def idle_section(
    ctx: Context, plan: Plan, systems: list[System], broken: dict[str, str]
) -> Section:
    section = Section(
        key="idle",
        title=f"Idle connections, {plan.idle_connections:,} open",
        description=(
            f"{plan.idle_connections:,} SMTP connections opened and left idle after the "
            "greeting; the memory of the server's processes (the sum of their PSS: a page "
            "they share counts once), and one more client sending a message. postroom runs "
            "as in the accept workloads (`workers` = the cores). "
            "Postfix is left out: it runs one smtpd process per connection (up to "
            f"process_limit). Median of {plan.runs} run(s) (min-max)."
        ),
        metrics=IDLE_METRICS,
        primary="pss_idle_mib",
    )
    chosen = [s for s in systems if s.name in IDLE_SYSTEMS]
    section.rows = _rows_for(chosen, broken)
    entries = [(s.name, _bind_idle(ctx, s, plan.idle_connections)) for s in chosen]
    _run_rows(ctx, section, entries, plan)
    return section


def _bind_idle(ctx: Context, system: System, connections: int) -> Callable[[], Sample]:
    return lambda: run_idle(ctx, system, connections, "idle")


def _postroom_rate(sections: list[Section]) -> float | None:
    """Half of postroom's accept throughput in this run (the many-per-connection mode)."""
    for section in reversed(sections):
        row = section.row("postroom") if section.key.startswith("accept") else None
        summary = row.summary("msgs_per_s") if row and row.status == "ok" else None
        if summary is not None:
            return summary.median / 2
    return None


def latency_section(
    ctx: Context,
    plan: Plan,
    systems: list[System],
    broken: dict[str, str],
    *,
    rate: float,
    how: str,
) -> Section:
    count = max(20, int(rate * plan.latency_seconds))
    connections = 20
    section = Section(
        key="latency",
        title=f"Latency at {rate:,.0f} msgs/s offered",
        description=(
            f"{how}. {count:,} messages of 4 KiB paced over {connections} persistent "
            "connections by a small client on raw sockets; latency is from the end of DATA "
            "(.CRLF written) to the 250. Medians of each run's percentiles over "
            f"{plan.runs} run(s) (min-max). A system slower than the offered rate shows a "
            "high 'started late'."
        ),
        metrics=LATENCY_METRICS,
        primary="p99_ms",
        rows=_rows_for(systems, broken),
    )
    entries = [(s.name, _bind_latency(ctx, s, rate, count, connections)) for s in systems]
    _run_rows(ctx, section, entries, plan)
    return section


def _bind_latency(
    ctx: Context, system: System, rate: float, count: int, connections: int
) -> Callable[[], Sample]:
    return lambda: run_latency(
        ctx, system, rate=rate, count=count, connections=connections, size=4 * KIB, label="latency"
    )


def _calibrate(ctx: Context, plan: Plan, systems: list[System]) -> float:
    """Without accept results: one short accept run of postroom to find the rate."""
    postroom = next(s for s in systems if s.name == "postroom")
    load = Load(min(plan.messages, 5000), plan.sessions, 4 * KIB, plan.accept_per_connection)
    ctx.progress("[latency] calibrating: one accept run of postroom")
    sample = run_accept(ctx, postroom, load, "calibrate")
    return sample.metrics["msgs_per_s"] / 2


def _postroom_version(python: Path) -> str | None:
    code = (
        "import importlib.metadata as m, importlib.util as u;"
        "print(m.version('postroom') + (' with uvloop' if u.find_spec('uvloop') else ''))"
    )
    done = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    return done.stdout.strip() or None


def _write(output: Path, stem: str, report: str, data: dict[str, object]) -> None:
    output.mkdir(parents=True, exist_ok=True)
    texts = ((f"{stem}.md", report), (f"{stem}.json", json.dumps(data, indent=2)))
    for name, text in texts:
        tmp = output / f"{name}.tmp"
        tmp.write_text(text + "\n")
        tmp.replace(output / name)


def _run_workloads(
    ctx: Context,
    plan: Plan,
    *,
    only: set[str],
    systems: list[System],
    chosen: set[str],
    broken: dict[str, str],
    builds: Builds,
    allow_install: bool,
) -> None:
    """Every chosen workload, in order; the sections collect in ``ctx.sections``."""
    if "accept" in only:
        accept_sections(ctx, plan, systems, broken)
    _application_workloads(ctx, plan, only=only, chosen=chosen, builds=builds, allow=allow_install)
    systems = [s for s in systems if s.name not in ACCEPT_ONLY]
    if "relay" in only:
        relay_sections(ctx, plan, chosen, builds)
    # Large messages' peak RSS is one process's (workers = 1, the default); the idle
    # sessions are held by as many processes as accept (workers = the cores), their
    # memory summed as PSS (workloads/idle.py).
    one_process = [
        dataclasses.replace(s, workers=1) if isinstance(s, PostroomSystem) else s for s in systems
    ]
    if "large" in only:
        large_section(ctx, plan, one_process, broken)
    if "idle" in only:
        idle_section(ctx, plan, systems, broken)
    has_postroom = any(s.name == "postroom" for s in systems)
    if {"pg-accept", "pg-delivery"} & only:
        postgres_sections(ctx, plan, only=only, python=builds.python, workers=builds.workers)
    if "latency" in only and (has_postroom or plan.latency_rate):
        rate = plan.latency_rate
        how = f"Offered rate {rate} msgs/s, as asked" if rate else ""
        if rate is None:
            rate = _postroom_rate(ctx.sections)
            how = "Half of postroom's median accept throughput (many per connection)"
        if rate is None:
            rate = _calibrate(ctx, plan, systems)
            how = "Half of postroom's accept throughput in a calibration run"
        latency_section(ctx, plan, systems, broken, rate=rate, how=how)


def _application_workloads(
    ctx: Context,
    plan: Plan,
    *,
    only: set[str],
    chosen: set[str],
    builds: Builds,
    allow: bool,
) -> None:
    """Submission with TLS and AUTH, and local delivery into Maildir."""
    if "submission" in only:
        submission_sections(ctx, plan, chosen, builds, allow=allow)
    if "local" in only:
        local_section(ctx, plan, chosen, builds)


_PG_ACCEPT_NOTE = (
    "PostgreSQL: durable (fsync on, synchronous_commit on), on a unix socket, a new "
    "database each run; its server CPU includes PostgreSQL's (every backend, the "
    "checkpointer, the WAL writer), as SQLite's is inside postroom's processes."
)


def postgres_sections(
    ctx: Context, plan: Plan, *, only: set[str], python: Path, workers: int
) -> None:
    """The PostgreSQL workloads, on one durable cluster the harness starts: accept on
    PostgreSQL against SQLite, and delivery by 1, 2, 3 nodes on one database."""
    try:
        with postgres_cluster() as cluster:
            if "pg-accept" in only:

                def new_database() -> tuple[str, int]:
                    url = cluster.url(cluster.new_database("accept"))
                    return url, cluster.postmaster_pid()

                systems: list[System] = [
                    PostroomSystem(python, "held", workers),
                    PostroomSystem(python, "held", workers, database=new_database),
                ]
                sections = accept_sections(
                    ctx,
                    plan,
                    systems,
                    {},
                    key="pg-accept",
                    title="Accept on PostgreSQL against SQLite",
                    reference="postroom-pg",
                )
                for section in sections:
                    section.notes.append(_PG_ACCEPT_NOTE)
            if "pg-delivery" in only:
                delivery_section(ctx, plan, cluster, python)
    except SetupError as exc:
        ctx.progress(f"PostgreSQL workloads not run: {exc}")
        section = Section(
            key="pg",
            title="PostgreSQL workloads",
            description="Not run.",
            metrics=NODES_METRICS,
            primary="msgs_per_s",
            rows=[Row("postroom-pg", "postroom on PostgreSQL", True, "failed", errors=[str(exc)])],
            reference=None,
        )
        ctx.sections.append(section)


def delivery_section(ctx: Context, plan: Plan, cluster: PostgresCluster, python: Path) -> Section:
    counts = sorted(set(plan.nodes))
    load = Load(plan.relay_messages, plan.sessions, 4 * KIB, plan.per_connection)
    section = Section(
        key="pg-delivery",
        title=f"Delivery by {', '.join(map(str, counts))} nodes on one PostgreSQL",
        description=(
            f"{plan.relay_messages:,} messages of 4 KiB queued (by one node, delivery paused), "
            "then held; N nodes (one process each, same database) start, the queue is "
            "released and the clock runs until smtp-sink has every message. PostgreSQL "
            "durable (fsync on, synchronous_commit on), on a unix socket; DB commits are "
            "pg_stat_database.xact_commit (read transactions too), WAL flushes "
            "pg_stat_wal.wal_sync (the durable commits), over the same time. "
            "÷ (N x one node): each run's "
            f"rate over N times one node's median. Median of {plan.runs} run(s) (min-max)."
            + (
                ""
                if plan.node_cpu is None
                else f" Each node and the sink capped at {plan.node_cpu:g} CPU (a cgroup"
                " each): one node stands for one machine of that size."
            )
        ),
        metrics=NODES_METRICS,
        primary="msgs_per_s",
        rows=[
            Row(node_row_name(n), f"{n} node{'s' if n > 1 else ''}", durable=True) for n in counts
        ],
        reference=None,
    )
    entries = [
        (node_row_name(n), _bind_nodes(ctx, cluster, python, n, load, node_cpu=plan.node_cpu))
        for n in counts
    ]
    _run_rows(ctx, section, entries, plan)
    scale_against_one(section, counts)
    section.notes += nodes_model(section, counts, plan.relay_messages)
    return section


def _bind_nodes(
    ctx: Context,
    cluster: PostgresCluster,
    python: Path,
    nodes: int,
    load: Load,
    *,
    node_cpu: float | None,
) -> Callable[[], Sample]:
    return lambda: run_nodes(
        ctx, cluster, python, nodes, load, label="pg-delivery", node_cpu=node_cpu
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    # SIGTERM (and SIGINT, even when started in the background) stop cleanly: the running
    # server is stopped, run files are deleted and the partial table is written.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    args = parse_args(argv)
    plan = make_plan(args)
    only = set(args.only.split(",")) if args.only else set(WORKLOADS)
    unknown = only - set(WORKLOADS)
    known = {*SYSTEM_NAMES, "postfix-relay", "postfix-virtual", *SUBMISSION_PEERS, HARAKA_AUTH}
    chosen = set(args.systems.split(",")) if args.systems else known
    unknown_systems = chosen - known
    if unknown or unknown_systems:
        print(f"unknown: {', '.join(sorted(unknown | unknown_systems))}", file=sys.stderr)
        return 2
    raise_fd_limit(65536)  # the idle workload's connections, here and in the servers
    python = args.postroom_python or default_python()
    builds = Builds(python, args.postroom_workers, args.compare_python)
    if builds.compare is not None:  # each chosen postroom system's twin runs with it
        chosen |= {twin(name) for name in chosen if name.startswith("postroom")}
    systems = [s for s in build_systems(builds) if s.name in chosen]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="postroom-bench-"))
    ctx = Context(
        workdir,
        quiet_threshold=args.quiet_threshold / 100,
        quiet_max_wait=args.quiet_max_wait,
    )
    started = time.time()
    try:
        broken = _install(systems, not args.no_install, ctx.progress)
    except SetupError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    machine = describe_machine(workdir)
    versions: dict[str, str | None] = {"postroom": _postroom_version(python)}
    versions |= install.peer_versions()
    versions["postgresql"] = postgres_version()
    interrupted = False
    try:
        _run_workloads(
            ctx,
            plan,
            only=only,
            systems=systems,
            chosen=chosen,
            broken=broken,
            builds=builds,
            allow_install=not args.no_install,
        )
    except KeyboardInterrupt:
        interrupted = True
        ctx.progress("interrupted: writing what was measured so far")
    finally:
        ctx.cleanup(args.keep_workdir)
    sections = ctx.sections
    targets = check_targets(sections)
    notes = [
        CONDITION,
        "Load: Postfix's smtp-source (no pipelining, no TLS, no AUTH) on plain loopback "
        "ports, and for submission our smtp-tls-source (the same, with TLS and AUTH); its "
        "CPU shares the same cores and is shown. Ratios are postroom's median "
        "divided by the peer's, measured in the same run; absolute figures move by about "
        "30% between runs and machines.",
    ]
    if interrupted:
        notes.insert(0, "INTERRUPTED: partial results, not a full run.")
    report = render(sections, targets, machine, versions, notes)
    data: dict[str, object] = {
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "command": ["bench/run.py", *(argv if argv is not None else sys.argv[1:])],
        "plan": plan.__dict__,
        "machine": machine,
        "versions": versions,
        "notes": notes,
        "sections": [section.to_json() for section in sections],
        "targets": [target.to_json() for target in targets],
    }
    _write(args.output, "interrupted" if interrupted else "latest", report, data)
    print(report)
    return 130 if interrupted else 0

"""Delivery by 1, 2, 3 ... postroom nodes sharing one PostgreSQL database, to smtp-sink.

A run: a new database; one node with delivery paused takes the messages from smtp-source
and stops; `postroom queue hold --all`; N delivering nodes start (each its own data
directory and listener, the same database, an ``smtp`` mailer to the sink); once all are
up, `postroom queue release --all` (its NOTIFY wakes every node) starts the clock, which
stops when the sink has every message. Then every node stops and the queue must hold
nothing undelivered. What is measured: messages delivered per second, per node, the
database's transactions (pg_stat_database.xact_commit: reads count too) and its WAL
flushes (pg_stat_wal.wal_sync: the durable commits, several sharing one when they
commit together) over the same time, and CPU of the nodes, PostgreSQL and the sink.

With ``node_cpu`` each node's process (and the sink's) runs capped at that many CPUs in a
cgroup of its own (``bench.cgroups``), so N nodes on this host stand for N machines of
one size, and one node's row is one such machine.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Sequence
from pathlib import Path

from bench.cgroups import CpuGroups
from bench.context import Context
from bench.figures import Metric, Sample, Section
from bench.host import NCPU
from bench.load import Load, run_smtp_source
from bench.meter import Meter, cpu_metrics
from bench.procs import stop_process, tree_cpu
from bench.systems.postgres import PostgresCluster
from bench.systems.postroom import PostroomProcess, run_cli, start_postroom
from bench.systems.smtpsink import start_sink
from bench.workloads.relay import to_sink, wait_for_sink

__all__ = ["NODES_METRICS", "node_row_name", "nodes_model", "run_nodes", "scale_against_one"]

NODES_METRICS = [
    Metric("msgs_per_s", "msgs/s delivered", higher_is_better=True),
    Metric("per_node_msgs_per_s", "msgs/s per node", higher_is_better=True),
    Metric("scaling", "÷ (N x one node)", higher_is_better=True, digits=2),
    Metric("db_commits_per_s", "DB commits/s", higher_is_better=False),
    Metric("commits_per_msg", "commits per msg", higher_is_better=False, digits=2),
    Metric("wal_flushes_per_s", "WAL flushes/s", higher_is_better=False),
    Metric("msgs_per_flush", "msgs per WAL flush", higher_is_better=True, digits=1),
    Metric("nodes_cpu_s", "nodes CPU s", higher_is_better=False, digits=1),
    Metric("db_cpu_s", "PostgreSQL CPU s", higher_is_better=False, digits=1),
    Metric("sink_cpu_s", "smtp-sink CPU s", higher_is_better=False, digits=1),
    Metric("host_busy_pct", "host busy %", higher_is_better=False),
    Metric("throttled_pct", "nodes throttled % of periods", higher_is_better=False),
]
# An smtp mailer's connections are counted across the nodes (cluster-wide), so at its
# default 20 every N would share the same 20 and the run would measure that limit, not
# the nodes. The same value for every N: one configuration, as on real nodes.
SINK_CONNECTIONS = 60
STATS_DELAY = 1.2  # backends report their commit counts about once a second

_PAUSED = """
[delivery]
paused = true
"""


def node_row_name(nodes: int) -> str:
    return f"nodes-{nodes}"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_nodes(
    ctx: Context,
    cluster: PostgresCluster,
    python: Path,
    nodes: int,
    load: Load,
    *,
    label: str,
    node_cpu: float | None = None,
) -> Sample:
    warnings = ctx.wait_quiet()
    rundir = ctx.new_rundir(f"{label}-{nodes}")
    database = cluster.new_database(label)
    url = cluster.url(database)
    sink, sink_port, sink_out = start_sink(rundir, count=True)
    servers: list[PostroomProcess] = []
    caps = CpuGroups(f"postroom-bench-{label}-{nodes}")
    try:
        filler = start_postroom(python, rundir / "fill", workers=1, tail=_PAUSED, storage=url)
        try:
            filled = run_smtp_source(filler.port, load, rundir / "smtp-source.err", 1800)
        finally:
            filler.stop()
        if filled.failures:
            raise RuntimeError("; ".join(filled.failures))
        filler.cli("queue", "hold", "--all")
        for node in range(1, nodes + 1):
            servers.append(
                start_postroom(
                    python,
                    rundir / f"node{node}",
                    workers=1,
                    tail=to_sink(sink_port, connections=SINK_CONNECTIONS),
                    storage=url,
                    setup=False,
                )
            )
        if node_cpu is not None:
            for index, server in enumerate(servers, 1):
                caps.place(f"node{index}", server.proc.pid, node_cpu)
            caps.place("sink", sink.pid, node_cpu)
        time.sleep(STATS_DELAY)
        commits_before = cluster.commits(database)
        flushes_before = cluster.wal_flushes()
        postgres = cluster.postmaster_pid()
        groups = {
            "nodes": [s.proc.pid for s in servers],
            "db": [postgres],
            "sink": [sink.pid],
        }
        cpu_before = {k: sum(tree_cpu(p) for p in pids) for k, pids in groups.items()}
        names = [f"node{i}" for i in range(1, nodes + 1)] if node_cpu is not None else []
        throttled_before = [caps.throttled(name) for name in names]
        meter = Meter([pid for pids in groups.values() for pid in pids])
        released_cpu = _children_cpu()
        meter.start()
        run_cli(python, servers[0].config, "queue", "release", "--all")
        delivered = wait_for_sink(sink_out, load.messages)
        reading = meter.stop()
        flushes = cluster.wal_flushes() - flushes_before
        cli_cpu = _children_cpu() - released_cpu
        cpu = {k: sum(tree_cpu(p) for p in pids) - cpu_before[k] for k, pids in groups.items()}
        throttled = [
            (ran - ran0, held - held0)
            for (ran, held), (ran0, held0) in zip(
                [caps.throttled(name) for name in names], throttled_before, strict=True
            )
        ]
        pending = servers[0].pending()
    finally:
        for server in servers:
            server.stop()
        stop_process(sink)
        caps.remove()
    time.sleep(STATS_DELAY)
    commits = cluster.commits(database) - commits_before
    cluster.drop_database(database)
    ctx.put_aside(rundir)
    if delivered < load.messages:
        raise RuntimeError(f"the sink received {delivered} of {load.messages} messages")
    if pending:
        warnings.append(f"the sink has every message but {pending} recipient(s) are pending")
    # The CLI that released the queue is the harness's doing, not another process's.
    metrics, cpu_warnings = cpu_metrics(reading, cli_cpu)
    warnings += cpu_warnings
    wall = reading.wall
    metrics["msgs_per_s"] = load.messages / wall
    metrics["per_node_msgs_per_s"] = load.messages / wall / nodes
    metrics["db_commits_per_s"] = commits / wall
    metrics["commits_per_msg"] = commits / load.messages
    metrics["wal_flushes_per_s"] = flushes / wall
    metrics["msgs_per_flush"] = load.messages / max(flushes, 1)
    metrics["nodes_cpu_s"] = cpu["nodes"]
    metrics["db_cpu_s"] = cpu["db"]
    metrics["sink_cpu_s"] = cpu["sink"]
    metrics["total_s"] = wall
    metrics["delivered"] = delivered
    metrics["nodes"] = nodes
    if node_cpu is not None:
        metrics["node_cpu"] = node_cpu
        periods = sum(ran for ran, _ in throttled)
        metrics["throttled_pct"] = 100 * sum(held for _, held in throttled) / max(periods, 1)
    return Sample(metrics, warnings)


def scale_against_one(section: Section, counts: Sequence[int]) -> None:
    """Each run's throughput divided by N x the median of one node's (the ``scaling``
    column): 1.0 is perfect scaling. Needs the one-node row."""
    one = section.row(node_row_name(1))
    base = one.summary("msgs_per_s") if one is not None else None
    if base is None or base.median <= 0:
        return
    for nodes in counts:
        row = section.row(node_row_name(nodes))
        for sample in row.samples if row is not None else []:
            sample.metrics["scaling"] = sample.metrics["msgs_per_s"] / (nodes * base.median)


def nodes_model(section: Section, counts: Sequence[int], messages: int) -> list[str]:
    """The model, from this run's medians, as lines for the section's notes."""
    medians: dict[int, dict[str, float]] = {}
    for nodes in counts:
        row = section.row(node_row_name(nodes))
        if row is None:
            continue
        found = {m.key: row.summary(m.key) for m in NODES_METRICS}
        medians[nodes] = {k: v.median for k, v in found.items() if v is not None}
    if 1 not in medians or "msgs_per_s" not in medians[1]:
        return []
    one = medians[1]["msgs_per_s"]
    lines = []
    for nodes, got in medians.items():
        if "msgs_per_s" not in got:
            continue
        cpu = got.get("nodes_cpu_s", 0) + got.get("db_cpu_s", 0) + got.get("sink_cpu_s", 0)
        per_msg_ms = 1000 * cpu / messages
        db_ms = 1000 * got.get("db_cpu_s", 0) / messages
        machine = NCPU * 1000 / per_msg_ms if per_msg_ms else 0.0
        lines.append(
            f"{nodes} node(s): {got['msgs_per_s']:,.0f} msgs/s ({got['msgs_per_s'] / one:.2f}x one "
            f"node); {per_msg_ms:.2f} ms of CPU per message in all (PostgreSQL {db_ms:.2f} ms), "
            f"so these {NCPU} cores bound delivery at about {machine:,.0f} msgs/s; "
            f"{got.get('commits_per_msg', 0):.2f} transactions and "
            f"{1 / max(got.get('msgs_per_flush', 0), 1e-9):.2f} WAL flushes per message."
        )
    return lines

"""Relay: messages submitted with smtp-source, delivered to an smtp-sink through an SMTP
mailer; timed from the first submission until the sink has every message, and then the
system's queue must hold nothing undelivered.

Each relaying system is one function ``(rundir, sink_port) -> RelayRun`` in ``RELAYS``
(an entry of None makes a "not yet supported" row).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.context import Context
from bench.figures import Metric, Sample
from bench.load import Load, run_smtp_source
from bench.meter import Meter, cpu_metrics
from bench.procs import stop_process
from bench.systems.postfix import start_postfix
from bench.systems.postroom import Builds, postroom_and_twin, postroom_labels, start_postroom
from bench.systems.smtpsink import sink_messages, start_sink

__all__ = [
    "RELAY_LABELS",
    "RELAY_METRICS",
    "RelayRun",
    "RelayStart",
    "relays",
    "run_relay",
    "to_sink",
    "wait_for_sink",
]

RELAY_METRICS = [
    Metric("msgs_per_s", "msgs/s end to end", higher_is_better=True),
    Metric("submit_s", "submission s", higher_is_better=False, digits=1),
    Metric("total_s", "until all delivered s", higher_is_better=False, digits=1),
    Metric("server_cpu_s", "server CPU s", higher_is_better=False, digits=1),
]
STALL = 120.0  # seconds without a new message at the sink: delivery has stopped


@dataclass
class RelayRun:
    """A relaying system, started, with the load's port and a way to see its queue."""

    port: int
    pids: list[int]  # its process trees, for CPU
    queue_empty: Callable[[], bool]  # nothing left to deliver (checked after the sink is full)
    stop: Callable[[], None]


RelayStart = Callable[[Path, int], RelayRun]


def relay_postfix(rundir: Path, sink_port: int) -> RelayRun:
    """Postfix relaying everything to the sink: smtpd, cleanup, qmgr, smtp, defaults."""
    postfix = start_postfix(rundir, f"relayhost = [127.0.0.1]:{sink_port}\n")
    return RelayRun(
        port=postfix.port,
        pids=[postfix.master_pid()],
        queue_empty=lambda: postfix.in_queue() == 0,
        stop=postfix.stop,
    )


def to_sink(port: int, *, connections: int | None = None) -> str:
    """postroom's config tables that send everything to the sink on ``port``
    (``connections``: the mailer's connections to it across nodes, default 20)."""
    limit = "" if connections is None else f"max_connections = {connections}\n"
    return f"""
[[mailers]]
name = "sink"
type = "smtp"
host = "127.0.0.1"
port = {port}
tls = "none"
{limit}
[[routes]]
name = "to-sink"
mailers = ["sink"]
"""


def relay_postroom(python: Path, workers: int, rundir: Path, sink_port: int) -> RelayRun:
    """postroom delivering everything through an ``smtp`` mailer to the sink (defaults:
    20 connections, 100 messages per connection, 100 messages in flight)."""
    server = start_postroom(python, rundir, workers=workers, tail=to_sink(sink_port))
    return RelayRun(server.port, [server.proc.pid], lambda: server.pending() == 0, server.stop)


def relays(builds: Builds) -> dict[str, RelayStart | None]:
    """Every relaying system by name (postroom's other build too, when given); None: not
    yet supported."""
    return {**postroom_and_twin(relay_postroom, builds), "postfix-relay": relay_postfix}


RELAY_LABELS = {
    **postroom_labels("postroom, smtp mailer to smtp-sink"),
    "postfix-relay": "Postfix relaying to smtp-sink",
}


def run_relay(ctx: Context, name: str, start: RelayStart, load: Load, label: str) -> Sample:
    warnings = ctx.wait_quiet()
    rundir = ctx.new_rundir(f"{label}-{name}")
    sink, sink_port, sink_out = start_sink(rundir, count=True)
    try:
        relay = start(rundir, sink_port)
        try:
            meter = Meter([*relay.pids, sink.pid])
            meter.start()
            result = run_smtp_source(relay.port, load, rundir / "smtp-source.err", 1800)
            delivered = wait_for_sink(sink_out, load.messages)
            reading = meter.stop()
            drained = _wait(relay.queue_empty, 30.0)
        finally:
            relay.stop()
    finally:
        stop_process(sink)
    ctx.put_aside(rundir)
    if result.failures:
        raise RuntimeError("; ".join(result.failures))
    if delivered < load.messages:
        raise RuntimeError(f"the sink received {delivered} of {load.messages} messages")
    if not drained:
        warnings.append("the sink has every message but the queue still holds some")
    metrics, cpu_warnings = cpu_metrics(reading, result.client_cpu)
    warnings += cpu_warnings
    metrics["msgs_per_s"] = load.messages / reading.wall
    metrics["submit_s"] = result.wall
    metrics["total_s"] = reading.wall
    metrics["delivered"] = delivered
    if delivered != load.messages:
        warnings.append(f"submitted {load.messages} messages, the sink received {delivered}")
    return Sample(metrics, warnings)


def wait_for_sink(out: Path, wanted: int) -> int:
    """Wait until the sink has counted ``wanted`` messages, or STALL seconds pass without
    one more; the last count."""
    last, last_change = -1, time.monotonic()
    while True:
        count = sink_messages(out, tail=True) or 0
        if count >= wanted:
            return count
        if count != last:
            last, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > STALL:
            return count
        time.sleep(0.02)


def _wait(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True

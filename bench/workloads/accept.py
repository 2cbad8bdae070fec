"""Accept throughput: smtp-source against a server; 4 KiB messages, or 20 MiB ones (large)."""

from __future__ import annotations

from bench.context import Context
from bench.figures import Metric, Sample
from bench.load import Load, run_smtp_source
from bench.meter import Meter, cpu_metrics
from bench.procs import tree_peak_rss
from bench.systems.base import System

__all__ = ["ACCEPT_METRICS", "LARGE_METRICS", "run_accept"]

MIB = 1024 * 1024

ACCEPT_METRICS = [
    Metric("msgs_per_s", "msgs/s", higher_is_better=True),
    Metric("client_cpu_s", "smtp-source CPU s", higher_is_better=False, digits=1),
    Metric("server_cpu_s", "server CPU s", higher_is_better=False, digits=1),
    # Per message: the figure other work on the host disturbs least (msgs/s drops with any
    # CPU the server does not get; its CPU per message moves far less).
    Metric("server_ms_per_msg", "server CPU ms per message", higher_is_better=False, digits=2),
    Metric("host_busy_pct", "host busy %", higher_is_better=False),
]
LARGE_METRICS = [
    Metric("mib_per_s", "MiB/s", higher_is_better=True, digits=1),
    Metric("msgs_per_s", "msgs/s", higher_is_better=True, digits=2),
    Metric("peak_rss_mib", "server peak RSS MiB", higher_is_better=False),
    Metric("server_cpu_s", "server CPU s", higher_is_better=False, digits=1),
]


def run_accept(
    ctx: Context, system: System, load: Load, label: str, *, single_process_rss: bool = False
) -> Sample:
    """One run: a fresh server, the load, then a check that what was acknowledged is stored."""
    warnings = ctx.wait_quiet()
    rundir = ctx.new_rundir(f"{label}-{system.name}")
    instance = system.start(rundir)
    try:
        meter = Meter([instance.pid, *instance.more_pids])
        meter.start()
        result = run_smtp_source(instance.port, load, rundir / "smtp-source.err", timeout=1800)
        reading = meter.stop()
        peak = tree_peak_rss(instance.pid)
    finally:
        instance.stop()
    stored = instance.stored()
    ctx.put_aside(rundir)
    if result.failures:
        raise RuntimeError("; ".join(result.failures))
    metrics, cpu_warnings = cpu_metrics(reading, result.client_cpu)
    warnings += cpu_warnings
    metrics["msgs_per_s"] = load.messages / result.wall
    if "server_cpu_s" in metrics:
        metrics["server_ms_per_msg"] = metrics["server_cpu_s"] * 1000 / load.messages
    metrics["mib_per_s"] = load.messages * load.size / MIB / result.wall
    metrics["wall_s"] = result.wall
    if single_process_rss and not system.multi_process:
        metrics["peak_rss_mib"] = peak / MIB
    if stored is not None:
        metrics["stored"] = stored
        if stored != load.messages:
            warnings.append(f"acknowledged {load.messages} messages but {stored} are stored")
    return Sample(metrics, warnings)

"""Latency at a fixed offered rate (half of postroom's measured accept throughput):
p50 and p99 from the end of DATA to the 250, with the paced client."""

from __future__ import annotations

from bench.context import Context
from bench.figures import Metric, Sample
from bench.meter import Meter, cpu_metrics
from bench.paced import message_bytes, percentile, run_paced
from bench.systems.base import RECIPIENT, SENDER, System

__all__ = ["LATENCY_METRICS", "run_latency"]

LATENCY_METRICS = [
    Metric("p99_ms", "p99 ms", higher_is_better=False, digits=2),
    Metric("p50_ms", "p50 ms", higher_is_better=False, digits=2),
    Metric("max_ms", "max ms", higher_is_better=False, digits=1),
    Metric("achieved_per_s", "achieved msgs/s", higher_is_better=True),
    Metric("late_pct", "started late %", higher_is_better=False, digits=1),
]


def run_latency(
    ctx: Context,
    system: System,
    *,
    rate: float,
    count: int,
    connections: int,
    size: int,
    label: str,
) -> Sample:
    warnings = ctx.wait_quiet()
    rundir = ctx.new_rundir(f"{label}-{system.name}")
    instance = system.start(rundir)
    message = message_bytes(SENDER, RECIPIENT, size)
    try:
        meter = Meter([instance.pid])
        meter.start()
        result = run_paced(
            instance.port,
            rate=rate,
            count=count,
            connections=connections,
            message=message,
            sender=SENDER,
            recipient=RECIPIENT,
        )
        reading = meter.stop()
    finally:
        instance.stop()
    ctx.put_aside(rundir)
    if not result.latencies:
        raise RuntimeError(f"no message was accepted ({result.errors} errors)")
    # the paced client runs inside this harness: its CPU is the client's, not the harness's
    metrics, cpu_warnings = cpu_metrics(reading, 0.0)
    metrics["client_cpu_s"] = result.cpu
    warnings += cpu_warnings
    millis = [v * 1000 for v in result.latencies]
    metrics |= {
        "p50_ms": percentile(millis, 50),
        "p99_ms": percentile(millis, 99),
        "max_ms": max(millis),
        "achieved_per_s": len(millis) / result.elapsed,
        "offered_per_s": rate,
        "late_pct": 100 * result.late / count,
        "errors": result.errors,
    }
    if result.errors:
        warnings.append(f"{result.errors} of {count} messages were refused or lost")
    if result.late > count // 100:
        warnings.append(f"{result.late} of {count} messages started late: below the offered rate")
    return Sample(metrics, warnings)

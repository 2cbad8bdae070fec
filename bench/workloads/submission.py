"""Submission: what applications send. A connection to a 587-style port (STARTTLS) or a
465-style one (implicit TLS), AUTH PLAIN, then one message (or many) of 4 KiB, QUIT;
``smtp-tls-source`` as the load, delivery held."""

from __future__ import annotations

from pathlib import Path

from bench.context import Context
from bench.figures import Metric, Sample
from bench.meter import Meter, cpu_metrics
from bench.systems.base import System
from bench.tlsload import SubmissionLoad, run_tls_source

__all__ = ["SUBMISSION_METRICS", "run_submission"]

SUBMISSION_METRICS = [
    Metric("msgs_per_s", "msgs/s", higher_is_better=True),
    Metric("client_cpu_s", "smtp-tls-source CPU s", higher_is_better=False, digits=1),
    Metric("server_cpu_s", "server CPU s", higher_is_better=False, digits=1),
    Metric("host_busy_pct", "host busy %", higher_is_better=False),
]


def run_submission(
    ctx: Context, system: System, load: SubmissionLoad, label: str, loadgen: Path
) -> Sample:
    """One run: a fresh server, the load on its submission port, then the stored count."""
    warnings = ctx.wait_quiet()
    # Short: Postfix's sockets live under the run directory, and a unix socket's path is
    # limited to 107 bytes.
    rundir = ctx.new_rundir(f"{label}-{system.name}"[:28])
    instance = system.start(rundir)
    try:
        port = instance.submission_port if load.tls == "starttls" else instance.submissions_port
        if port is None:
            raise RuntimeError(f"{system.name} has no {load.tls} submission port")
        meter = Meter([instance.pid, *instance.more_pids])
        meter.start()
        result = run_tls_source(loadgen, port, load, rundir / "smtp-tls-source.err", 1800)
        reading = meter.stop()
    finally:
        instance.stop()
    stored = instance.stored()
    ctx.put_aside(rundir)
    if result.failures:
        raise RuntimeError("; ".join(result.failures))
    metrics, cpu_warnings = cpu_metrics(reading, result.client_cpu)
    warnings += cpu_warnings
    metrics["msgs_per_s"] = load.messages / result.wall
    metrics["wall_s"] = result.wall
    resumed = result.detail.partition("resumed=")[2].split()[:1]
    if resumed:
        metrics["tls_resumed"] = float(resumed[0])
    if stored is not None:
        metrics["stored"] = stored
        if stored != load.messages:
            warnings.append(f"acknowledged {load.messages} messages but {stored} are stored")
    return Sample(metrics, warnings)

"""Local delivery: mail for the server's own domain, received on the mx port by
smtp-source and delivered into the user's Maildir; timed from the first submission until
every message is a file in ``new/``.

postroom: the ``local`` mailer, as installed (``postroom-local`` without a held route).
Postfix: final destination for the domain through virtual(8) (``virtual_mailbox_domains``,
a static map to ``bench.test/bench/``, so a Maildir), with its defaults otherwise.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.context import Context
from bench.figures import Metric, Sample
from bench.load import Load, run_smtp_source
from bench.meter import Meter, cpu_metrics
from bench.systems.base import DOMAIN
from bench.systems.postfix import start_postfix
from bench.systems.postroom import Builds, postroom_and_twin, postroom_labels, start_postroom

__all__ = ["LOCAL_LABELS", "LOCAL_METRICS", "LocalRun", "locals_", "run_local"]

LOCAL_METRICS = [
    Metric("msgs_per_s", "msgs/s into Maildir", higher_is_better=True),
    Metric("submit_s", "submission s", higher_is_better=False, digits=1),
    Metric("total_s", "until all in new/ s", higher_is_better=False, digits=1),
    Metric("server_cpu_s", "server CPU s", higher_is_better=False, digits=1),
]
STALL = 120.0  # seconds without a new file: delivery has stopped


@dataclass
class LocalRun:
    port: int
    pids: list[int]
    new_dir: Path  # where delivered messages appear
    stop: Callable[[], None]


LocalStart = Callable[[Path], LocalRun]

_VIRTUAL_MASTER = "virtual   unix  -       n       n       -       -       virtual\n"


def local_postfix(rundir: Path) -> LocalRun:
    mail = rundir / "mail"
    mail.mkdir()
    owner = 65534  # nobody: virtual(8) delivers as the map's uid, at least virtual_minimum_uid
    os.chown(mail, owner, owner)
    main = (
        f"virtual_mailbox_domains = {DOMAIN}\n"
        f"virtual_mailbox_base = {mail}\n"
        f"virtual_mailbox_maps = static:{DOMAIN}/bench/\n"
        f"virtual_uid_maps = static:{owner}\n"
        f"virtual_gid_maps = static:{owner}\n"
    )
    postfix = start_postfix(rundir, main, _VIRTUAL_MASTER)
    new_dir = mail / DOMAIN / "bench" / "new"
    return LocalRun(postfix.port, [postfix.master_pid()], new_dir, postfix.stop)


def local_postroom(python: Path, workers: int, rundir: Path) -> LocalRun:
    server = start_postroom(python, rundir, workers=workers)
    new_dir = rundir / "data" / "mail" / DOMAIN / "bench" / "Maildir" / "new"
    return LocalRun(server.port, [server.proc.pid], new_dir, server.stop)


def locals_(builds: Builds) -> dict[str, LocalStart]:
    """Every system delivering into Maildir by name (postroom's other build too, when
    given)."""
    return {**postroom_and_twin(local_postroom, builds), "postfix-virtual": local_postfix}


LOCAL_LABELS = {
    **postroom_labels("postroom, local mailer into Maildir"),
    "postfix-virtual": "Postfix, virtual(8) into Maildir",
}


def run_local(ctx: Context, name: str, start: LocalStart, load: Load, label: str) -> Sample:
    warnings = ctx.wait_quiet()
    rundir = ctx.new_rundir(f"{label}-{name}")
    run = start(rundir)
    try:
        meter = Meter(run.pids)
        meter.start()
        result = run_smtp_source(run.port, load, rundir / "smtp-source.err", 1800)
        delivered = _wait_for_files(run.new_dir, load.messages)
        reading = meter.stop()
    finally:
        run.stop()
    ctx.put_aside(rundir)
    if result.failures:
        raise RuntimeError("; ".join(result.failures))
    if delivered < load.messages:
        raise RuntimeError(f"{delivered} of {load.messages} messages reached the Maildir")
    metrics, cpu_warnings = cpu_metrics(reading, result.client_cpu)
    warnings += cpu_warnings
    metrics["msgs_per_s"] = load.messages / reading.wall
    metrics["submit_s"] = result.wall
    metrics["total_s"] = reading.wall
    metrics["delivered"] = delivered
    return Sample(metrics, warnings)


def _count(directory: Path) -> int:
    try:
        return sum(1 for _ in os.scandir(directory))
    except FileNotFoundError:
        return 0


def _wait_for_files(directory: Path, wanted: int) -> int:
    last, last_change = -1, time.monotonic()
    while True:
        count = _count(directory)
        if count >= wanted:
            return count
        if count != last:
            last, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > STALL:
            return count
        time.sleep(0.02)

"""postroom itself: `postroom serve` on one plain mx-role listener, data in the run directory.

Two ways to run it for the accept workloads:

- ``held`` (the row compared with the peers): accepting into the durable queue without
  delivering, like Postfix's hold queue: ``[delivery] paused = true``, postroom's own
  switch for it (the scheduler claims nothing; everything else runs as installed).
- ``local``: postroom as installed: mail for its local domain is delivered to Maildir by
  the ``local`` mailer while more is being accepted.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

from bench.paths import REPO
from bench.procs import SetupError, free_port, log_tail, stop_process
from bench.systems.base import DOMAIN, LARGE_LIMIT, RECIPIENT, Instance, System

__all__ = [
    "TWIN_MARK",
    "Builds",
    "PostroomProcess",
    "PostroomSystem",
    "default_python",
    "postroom_and_twin",
    "postroom_labels",
    "run_cli",
    "start_postroom",
    "twin",
    "with_twins",
]

R = TypeVar("R")

MAX_CONNECTIONS = 5000  # room for the idle-connections workload (2,000) and more


def default_python() -> Path:
    """The interpreter that has postroom installed: the repository's .venv if there is one."""
    venv = REPO / ".venv" / "bin" / "python"
    return venv if venv.exists() else Path(sys.executable)


def _config(
    rundir: Path, port: int, *, workers: int, limits: str, tail: str, storage: str | None
) -> str:
    storage_line = "" if storage is None else f'storage = "{storage}"\n'
    return f"""hostname = "{DOMAIN}"
data_dir = "{rundir / "data"}"
{storage_line}workers = {workers}

# The default level (info: a line or two for every message), as every peer runs with
# its own default logging.
[log]
file = "{rundir / "postroom.log"}"

[limits]
max_connections = {MAX_CONNECTIONS}
max_connections_per_ip = {MAX_CONNECTIONS}
max_message_size = {LARGE_LIMIT}
{limits}
# The systems compared check no SPF, DKIM or DMARC (and DNS may be unreachable here).
[inbound_auth]
enabled = false

# The API runs, as installed, on a free port: the default (8025) may be taken here.
[api]
port = 0

[[listeners]]
address = "127.0.0.1"
port = {port}
role = "mx"
{tail}"""


@dataclass
class PostroomProcess:
    """A running `postroom serve` and its CLI."""

    python: Path
    config: Path
    port: int
    proc: subprocess.Popen[bytes]

    def cli(self, *args: str, stdin: str | None = None) -> str:
        return run_cli(self.python, self.config, *args, stdin=stdin)

    def messages(self) -> list[dict[str, Any]]:
        listed = json.loads(self.cli("queue", "list", "--json", "--limit", "10000000"))
        assert isinstance(listed, list)
        return listed

    def pending(self) -> int:
        """Recipients not yet delivered, bounced or expired."""
        final = ("delivered", "bounced", "expired")
        return sum(1 for m in self.messages() for r in m["recipients"] if r["status"] not in final)

    def stop(self) -> None:
        stop_process(self.proc)


def run_cli(python: Path, config: Path, *args: str, stdin: str | None = None) -> str:
    argv = [str(python), "-m", "postroom", "--config", str(config), *args]
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise SetupError(f"postroom {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def start_postroom(
    python: Path,
    rundir: Path,
    *,
    workers: int,
    limits: str = "",
    tail: str = "",
    storage: str | None = None,
    setup: bool = True,
) -> PostroomProcess:
    """Write a config (``workers`` processes, extra ``[limits]`` lines, extra tables, the
    ``storage`` URL: unset, SQLite in the run directory), add the domain and the user
    (``setup``: not for a second node on the same database), start `postroom serve` and
    wait for its ready line."""
    port = free_port()
    rundir.mkdir(exist_ok=True)
    config = rundir / "postroom.toml"
    config.write_text(
        _config(rundir, port, workers=workers, limits=limits, tail=tail, storage=storage)
    )
    if setup:
        run_cli(python, config, "domain", "add", DOMAIN)
        run_cli(python, config, "user", "add", RECIPIENT, "--password-stdin", stdin="bench-pass\n")
    out = rundir / "postroom.out"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [str(python), "-m", "postroom", "--config", str(config), "serve"],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=rundir,
        )
    try:
        _wait_for_ready(rundir / "postroom.log", out, proc)
    except SetupError:
        stop_process(proc)
        raise
    return PostroomProcess(python, config, port, proc)


def _wait_for_ready(log: Path, out: Path, proc: subprocess.Popen[bytes]) -> None:
    """Until postroom logs its ready line, which it writes once every process (the
    primary and each accept worker) accepts: a load that began before would open its
    long connections to the processes already listening."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SetupError(
                f"postroom exited {proc.returncode} before it was ready\n{log_tail(out)}"
            )
        if log.exists() and " ready: " in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise SetupError(f"postroom was not ready after 60 s\n{log_tail(log)}")


# Delivery held as Postfix's hold queue holds it, with postroom's own switch.
_HELD_LIMITS = "shutdown_grace = 1.0\n"
_HELD_TAIL = """
[delivery]
paused = true
"""


def _submission_listeners(submission: int, submissions: int) -> str:
    """The submission workload's listeners: 587-style and 465-style, TLS and AUTH required,
    on the certificate postroom makes for itself (ECDSA P-256)."""
    return f"""
[[listeners]]
address = "127.0.0.1"
port = {submission}
role = "submission"

[[listeners]]
address = "127.0.0.1"
port = {submissions}
role = "submissions"
"""


TWIN_MARK = "[the build at --compare-python]"  # ends a twin row's label


def twin(name: str) -> str:
    """The row name of ``name``'s twin: the same system run by the build at
    ``--compare-python``, beside it in every workload, so that one invocation compares
    two builds run for run."""
    return f"{name}-compare"


def with_twins(systems: list[System], compare: Path | None) -> list[System]:
    """``systems``, each postroom system followed by its twin run by ``compare`` (the
    list as it is without one)."""
    together: list[System] = []
    for system in systems:
        together.append(system)
        if compare is not None and isinstance(system, PostroomSystem):
            together.append(dataclasses.replace(system, python=compare, is_twin=True))
    return together


@dataclass(frozen=True)
class Builds:
    """The postroom builds a run measures: the one under test (``python``) and, with
    ``--compare-python``, another beside it (``compare``); each with ``workers``
    accepting processes."""

    python: Path
    workers: int
    compare: Path | None = None


def postroom_and_twin(start: Callable[..., R], builds: Builds) -> dict[str, Callable[..., R]]:
    """A workload's postroom start by row name, and its twin's with the build at
    ``builds.compare`` when given."""
    starts: dict[str, Callable[..., R]] = {
        "postroom": partial(start, builds.python, builds.workers)
    }
    if builds.compare is not None:
        starts[twin("postroom")] = partial(start, builds.compare, builds.workers)
    return starts


def postroom_labels(label: str) -> dict[str, str]:
    """The labels of a workload's postroom row and of its twin."""
    return {"postroom": label, twin("postroom"): f"{label} {TWIN_MARK}"}


@dataclass
class PostroomSystem:
    python: Path
    delivery: Literal["held", "local"] = "held"
    workers: int = 1
    submission: bool = False  # also listen as 587-style and 465-style submission
    # PostgreSQL: a new database's URL for each run and the pid of the postmaster, whose
    # process tree (every backend) counts as the server's CPU; None: SQLite in the run
    # directory.
    database: Callable[[], tuple[str, int]] | None = None
    name: str = ""
    label: str = ""
    durable: bool = True
    multi_process: bool = False
    is_twin: bool = False  # run by the build at --compare-python (``twin``)

    def __post_init__(self) -> None:
        processes = "one process" if self.workers == 1 else f"{self.workers} accept workers"
        if self.delivery == "held" and self.submission:
            self.name = "postroom"
            self.label = f"postroom (argon2id, login cache, {processes}; delivery held)"
        elif self.database is not None:
            self.name = "postroom-pg"
            self.label = f"postroom (PostgreSQL, group commit, {processes}; delivery held)"
        elif self.delivery == "held":
            self.name = "postroom"
            self.label = f"postroom (SQLite, group commit, {processes}; delivery held)"
        else:
            self.name = "postroom-local"
            self.label = f"postroom, {processes}, also delivering each message to Maildir"
        if self.is_twin:
            self.name, self.label = twin(self.name), f"{self.label} {TWIN_MARK}"

    def start(self, rundir: Path) -> Instance:
        limits = tail = ""
        if self.delivery == "held":
            limits, tail = _HELD_LIMITS, _HELD_TAIL
        ports = (free_port(), free_port()) if self.submission else None
        if ports is not None:
            tail += _submission_listeners(*ports)
        storage, more_pids = None, []
        if self.database is not None:
            storage, postmaster = self.database()
            more_pids.append(postmaster)
        server = start_postroom(
            self.python, rundir, workers=self.workers, limits=limits, tail=tail, storage=storage
        )
        return Instance(
            port=server.port,
            pid=server.proc.pid,
            stop=server.stop,
            log=rundir / "postroom.log",
            stored=lambda: len(server.messages()),
            submission_port=ports[0] if ports else None,
            submissions_port=ports[1] if ports else None,
            more_pids=more_pids,
        )

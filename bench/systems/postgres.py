"""A throwaway PostgreSQL cluster for the PostgreSQL workloads, durable as in production.

initdb into a new temporary directory, postgres on a unix socket there (no TCP), stopped and
removed at the end. Unlike the test suite's cluster, fsync stays on and
synchronous_commit is on: every commit postroom waits for is on disk, as it would be on
a real database server. Each run gets a new database (``new_database``), dropped after.

PostgreSQL refuses to run as root: as root the cluster belongs to the ``postgres``
system user (Debian's package makes it) and its programs run through ``runuser``.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import SetupError, free_port

__all__ = ["PostgresCluster", "find_bindir", "postgres_cluster", "postgres_version"]

USER = "postroom"  # the superuser initdb makes; trusted on the socket


def find_bindir() -> Path | None:
    """Where initdb and pg_ctl are: PATH, else Debian's versioned directories."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    for directory in reversed(dirs):
        if (Path(directory) / "initdb").exists():
            return Path(directory)
    return None


def postgres_version() -> str | None:
    bindir = find_bindir()
    if bindir is None:
        return None
    done = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False
    )
    words = done.stdout.split()  # "postgres (PostgreSQL) 15.18 (Debian ...)"
    return words[2] if len(words) > 2 else None


@dataclass
class PostgresCluster:
    bindir: Path
    root: Path  # data directory and socket live here
    port: int = 0  # names the socket file only: there is no TCP listener
    _owner: str | None = None
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _run(self, *args: str, timeout: float = 120) -> str:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._owner is not None:
            command = ["runuser", "-u", self._owner, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise SetupError(f"{args[0]} failed: {(done.stdout + done.stderr).strip()[-800:]}")
        return done.stdout

    def start(self) -> None:
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise SetupError(
                    "PostgreSQL refuses to run as root and there is no postgres user:"
                    " apt-get install postgresql"
                ) from None
            self._owner = "postgres"
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", USER, "--auth=trust",
            "--encoding=UTF8", "--locale=C.UTF-8",
        )  # fmt: skip
        self.port = free_port()
        # fsync and synchronous_commit are PostgreSQL's defaults (on); said here so that
        # no one "speeds up" the benchmark by turning them off.
        options = (
            f"-k {self.root} -c listen_addresses='' -p {self.port}"
            " -c fsync=on -c synchronous_commit=on -c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w",
            "-o", options, "start",
        )  # fmt: skip

    def stop(self) -> None:
        with contextlib.suppress(SetupError, subprocess.SubprocessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@/{database}?host={self.root}&port={self.port}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """One statement's result, unaligned; psql runs as the cluster's owner."""
        return self._run(
            "psql", "-X", "-q", "-At", "-h", str(self.root), "-p", str(self.port),
            "-U", USER, "-d", database, "-c", sql,
        ).strip()  # fmt: skip

    def new_database(self, label: str) -> str:
        name = f"bench_{label.replace('-', '_')}_{next(self._names)}"
        self.psql(f'CREATE DATABASE "{name}" ENCODING UTF8 TEMPLATE template0')
        return name

    def drop_database(self, name: str) -> None:
        with contextlib.suppress(SetupError):
            self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def commits(self, database: str) -> int:
        """Transactions committed in ``database`` so far (pg_stat_database.xact_commit):
        each backend reports its counts at most about once a second, so read it a second
        after the work stopped."""
        return int(
            self.psql(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
                database,
            )
        )

    def wal_flushes(self) -> int:
        """WAL flushes to disk so far, in the whole cluster (pg_stat_wal.wal_sync): one per
        durable commit, or per group of commits that PostgreSQL flushed together."""
        return int(self.psql("SELECT wal_sync FROM pg_stat_wal"))

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A started cluster in a new directory of the system's temporary one: a short path
    (a unix socket's must fit in 107 bytes) that the postgres user can reach (the work
    directory may sit below one only its owner may enter)."""
    bindir = find_bindir()
    if bindir is None:
        raise SetupError("PostgreSQL is not installed: apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="postroom-bench-pg-"))
    root.chmod(0o755)
    cluster = PostgresCluster(bindir, root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()

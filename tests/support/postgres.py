"""A throwaway PostgreSQL cluster for the test session: initdb into a temporary
directory, postgres listening on a unix socket there and, for the TLS tests, on a free
loopback port with a certificate of a test CA (TLS only there), stopped and removed at
the end. Each contract test gets an empty database: a copy of a migrated template the
first time (about half a second), then one a finished test gave back, emptied by
TRUNCATE (milliseconds).

PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres``
system user (Debian's package makes it) and its programs run through ``runuser``.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import trustme

__all__ = ["PostgresCluster", "end_connections", "find_bindir"]

SUPERUSER = "postroom"
TEMPLATE = "postroom_template"
# A role that must give a password (SCRAM), for the tests of libpq's password rules.
PASSWORD_USER = "mailer"
PASSWORD = "s3cret-pass"


def find_bindir() -> Path | None:
    """Where initdb and pg_ctl are: PATH, else Debian's versioned directories."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    for directory in reversed(dirs):
        if (Path(directory) / "initdb").exists():
            return Path(directory)
    return None


class PostgresCluster:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        # Short: a unix socket path must fit in 107 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._owner = "postgres" if os.geteuid() == 0 else None
        self._names = itertools.count()
        self._spare: list[str] = []
        self.port = 0
        self._options = ""
        self.ca = trustme.CA()
        self.ca_file = self.root / "ca.pem"

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._owner is not None:
            command = ["runuser", "-u", self._owner, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        entry = None
        if self._owner is not None:
            try:
                entry = pwd.getpwnam(self._owner)
            except KeyError:
                raise RuntimeError(
                    "PostgreSQL refuses to run as root and there is no postgres user to run"
                    " it as: install the postgresql package, which makes one"
                ) from None
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
            "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
        )  # fmt: skip
        # The superuser is trusted on the socket; everyone else gives a password. Over
        # TCP, TLS or nothing.
        (self.data / "pg_hba.conf").write_text(
            f"local all {SUPERUSER} trust\nlocal all all scram-sha-256\n"
            f"hostssl all {SUPERUSER} 127.0.0.1/32 trust\n"
        )
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        cert.cert_chain_pems[0].write_to_path(str(self.data / "server.crt"))
        cert.private_key_pem.write_to_path(str(self.data / "server.key"))
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        for name in ("server.crt", "server.key"):
            (self.data / name).chmod(0o600)  # postgres refuses a key others may read
            if entry is not None:
                os.chown(self.data / name, entry.pw_uid, entry.pw_gid)
        for _ in range(3):  # the free port may be taken between asking and listening
            self.port = _free_port()
            # fsync off: a throwaway cluster loses nothing worth keeping in a crash, and
            # the suite runs faster; synchronous_commit stays on as the store sets it.
            options = (
                f"-k {self.root} -c listen_addresses=127.0.0.1 -p {self.port} -c ssl=on"
                " -c fsync=off -c max_connections=200"
            )
            try:
                self._start_server(options)
                return
            except subprocess.CalledProcessError:
                continue
        raise RuntimeError(f"PostgreSQL did not start: see {self.log}")

    def _start_server(self, options: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start")
        self._options = options

    def halt(self) -> None:
        """Stop the server as an operator or a failing machine would (``-m fast``: open
        sessions are ended, their transactions rolled back); ``resume`` starts it again."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the server ``halt`` stopped, on the same socket and port."""
        self._start_server(self._options)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The server stopped with SIGSTOP meanwhile, every process of it (the postmaster
        first, so it starts no new one): connections stay open and new ones are taken
        by the kernel, but nothing answers, as with a frozen machine or a network that
        drops every packet. SIGCONT after, and all goes on where it stopped."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGSTOP)
        stopped = [postmaster]
        try:
            for pid in _children(postmaster):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
            yield
        finally:
            for pid in reversed(stopped):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str, user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@/{database}?host={self.root}&port={self.port}"

    def tls_url(self, database: str, sslmode: str) -> str:
        """The loopback TCP listener, where only TLS is accepted."""
        return (
            f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"
            f"?sslmode={sslmode}&sslrootcert={self.ca_file}"
        )

    @contextlib.contextmanager
    def admin(self) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            yield conn

    def new_database(self, template: str = TEMPLATE, owner: str = SUPERUSER) -> str:
        """A fresh database copied from ``template`` (template0: an empty one); its name."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" OWNER "{owner}"')
        return name

    def lend_database(self) -> str:
        """An empty, migrated database for one test; ``give_back`` when done."""
        return self._spare.pop() if self._spare else self.new_database()

    def give_back(self, name: str) -> None:
        """Empty the database for the next test; one still in use is dropped instead."""
        try:
            with psycopg.connect(self.url(name), autocommit=True) as conn:
                conn.execute("SET lock_timeout = '2s'")
                row = conn.execute(
                    "SELECT string_agg(quote_ident(tablename), ', ') FROM pg_tables"
                    " WHERE schemaname = 'public'"
                    " AND tablename NOT IN ('schema_version', 'instance')"
                ).fetchone()
                assert row is not None
                conn.execute(f"TRUNCATE {row[0]} RESTART IDENTITY".encode())
                # TRUNCATE fires no row trigger: the large objects go on their own.
                conn.execute("SELECT lo_unlink(oid) FROM pg_largeobject_metadata")
        except psycopg.Error:
            self.drop_database(name)
            return
        self._spare.append(name)

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def end_connections(url: str) -> int:
    """End every other connection to ``url``'s database (``pg_terminate_backend``), as a
    restart or an operator would, and wait until their backends are gone; how many."""
    others = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    with psycopg.connect(url, autocommit=True) as conn:
        ended = conn.execute(f"SELECT count(pg_terminate_backend(pid)) {others}").fetchone()
        deadline = time.monotonic() + 30
        while conn.execute(f"SELECT count(*) {others}").fetchone() != (0,):
            assert time.monotonic() < deadline, "the ended backends did not exit"
            time.sleep(0.01)
    assert ended is not None
    count: int = ended[0]
    return count


def _children(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        # "pid (name) state ppid ...": the name may hold spaces and parentheses.
        if int(stat.rpartition(")")[2].split()[1]) == parent:
            found.append(int(entry.name))
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port

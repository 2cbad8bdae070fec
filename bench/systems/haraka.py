"""Haraka (npm), one process: a queue plugin that writes and fsyncs a file, or ``discard``;
for the submission workload also its ``tls`` plugin (STARTTLS, and implicit TLS on its
``smtps_port``) and ``auth/flat_file`` (AUTH PLAIN and LOGIN)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.install import haraka_dir
from bench.paths import BENCH
from bench.procs import SetupError, free_port, stop_process, wait_for_greeting
from bench.systems.base import DOMAIN, LARGE_LIMIT, Instance
from bench.systems.submission import PASSWORD, USERNAME, make_certificate

__all__ = ["HarakaSystem"]

_PLUGINS = BENCH / "peers"


@dataclass
class HarakaSystem:
    fsync: bool  # True: queue_fsync (durable); False: Haraka's own queue/discard
    # With a 587-style port (STARTTLS) and a 465-style one (implicit TLS), AUTH from
    # auth/flat_file (the password as given: Haraka's flat file holds no hashes)
    submission: bool = False
    name: str = ""
    label: str = ""
    durable: bool = False
    multi_process: bool = False

    def __post_init__(self) -> None:
        self.name = "haraka-fsync" if self.fsync else "haraka-discard"
        self.label = (
            "Haraka, queue plugin writing + fsync'ing a file"
            if self.fsync
            else "Haraka, discard (stores nothing)"
        )
        if self.submission:
            self.name = "haraka-auth"
            self.label = "Haraka, tls + auth/flat_file (plain-text password), fsync'ed file"
        self.durable = self.fsync

    def _configure_submission(self, config: Path, ports: tuple[int, int], rundir: Path) -> str:
        """tls and auth/flat_file; the plugins to load before the others."""
        cert, key = make_certificate(rundir)
        shutil.copy(cert, config / "tls_cert.pem")  # the tls plugin's default file names
        shutil.copy(key, config / "tls_key.pem")
        users = f"[core]\nmethods=PLAIN,LOGIN\n\n[users]\n{USERNAME}={PASSWORD}\n"
        (config / "auth_flat_file.ini").write_text(users)
        submission, submissions = ports
        listen = (config / "smtp.ini").read_text().splitlines()[0]
        (config / "smtp.ini").write_text(
            f"{listen},127.0.0.1:{submission},127.0.0.1:{submissions}\n"
            f"nodes=0\nsmtps_port={submissions}\n"
        )
        return "tls\nauth/flat_file\n"

    def _configure(self, home: Path, port: int) -> None:
        package = haraka_dir() / "node_modules" / "Haraka"
        shutil.copytree(package / "config", home / "config")  # Haraka's defaults, then ours
        config = home / "config"
        # nodes=0: no cluster, one process (the default, nodes=1, forks a worker)
        (config / "smtp.ini").write_text(f"listen=127.0.0.1:{port}\nnodes=0\n")
        queue = "queue_fsync" if self.fsync else "queue/discard"
        (config / "plugins").write_text(f"bench_local\nrcpt_to.in_host_list\n{queue}\n")
        (config / "host_list").write_text(f"{DOMAIN}\n")
        # log.ini as shipped: level=info, as every system runs at its default level
        connection = (config / "connection.ini").read_text()
        connection = re.sub(r"(?m)^bytes=\d+$", f"bytes={LARGE_LIMIT}", connection)
        (config / "connection.ini").write_text(connection)
        (home / "plugins").mkdir()
        shutil.copy(_PLUGINS / "haraka_bench_local.js", home / "plugins" / "bench_local.js")
        shutil.copy(_PLUGINS / "haraka_queue_fsync.js", home / "plugins" / "queue_fsync.js")

    def start(self, rundir: Path) -> Instance:
        home = rundir / "haraka"
        spool = rundir / "spool"
        spool.mkdir(parents=True)
        port = free_port()
        self._configure(home, port)
        ports: tuple[int, int] | None = None
        if self.submission:
            ports = (free_port(), free_port())
            first = self._configure_submission(home / "config", ports, rundir)
            plugins = home / "config" / "plugins"
            plugins.write_text(first + plugins.read_text())
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "BENCH_SPOOL_DIR": str(spool)}
        if not self.fsync:
            env["YES_REALLY_DO_DISCARD"] = "1"  # queue/discard's own switch
        log = rundir / "haraka.log"
        haraka = haraka_dir() / "node_modules" / "Haraka" / "bin" / "haraka"
        node = shutil.which("node") or "node"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [node, str(haraka), "-c", str(home)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=home,
            )
        try:
            wait_for_greeting(port, 60, proc, log)
        except SetupError:
            stop_process(proc)
            raise

        def stored() -> int | None:
            return sum(1 for _ in spool.iterdir()) if self.fsync else None

        return Instance(
            port=port,
            pid=proc.pid,
            stop=lambda: stop_process(proc),
            log=log,
            stored=stored,
            submission_port=ports[0] if ports else None,
            submissions_port=ports[1] if ports else None,
        )

"""Running postroom for tests: in-process (fast) and as a real `postroom serve` process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from postroom.config import load
from postroom.config.settings import ListenerRole, ListenerSettings, Settings
from postroom.runtime import Server
from postroom.store.instance import open_instance_store

__all__ = [
    "RunningProcess",
    "cli_out",
    "client_context",
    "free_port",
    "loopback_settings",
    "make_store",
    "ports_by_role",
    "ready_ports",
    "run_cli",
    "start_process",
    "wait_for",
    "write_config",
]

NO_DNS = "127.0.0.1:9"  # no DNS server listens here
ROLES = (ListenerRole.MX, ListenerRole.SUBMISSION, ListenerRole.SUBMISSIONS)


def loopback_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings for a test server: every listener on an ephemeral loopback port."""
    listeners = tuple(ListenerSettings(address="127.0.0.1", port=0, role=r) for r in ROLES)
    values: dict[str, object] = {
        "hostname": "mail.test",
        "data_dir": data_dir,
        "listeners": listeners,
        # Never ask a resolver off this machine: nothing answers here, so lookups fail fast.
        "dns": {"nameservers": [NO_DNS], "timeout": 0.5},
        "api": {"port": 0},  # an ephemeral port: tests never collide on 8025
    }
    values.update(overrides)
    return Settings.model_validate(values)


def make_store(config: Path) -> Path:
    """Create the store ``config`` names, as the server's first start does (only
    ``serve`` and the commands that add to the directory make one); ``config``."""

    async def create() -> None:
        settings = load(config)
        store = await open_instance_store(settings.storage_url, settings.data_dir)
        await store.aclose()

    asyncio.run(create())
    return config


def ports_by_role(server: Server) -> dict[str, int]:
    assert server.smtp is not None
    return {spec.role.value: listener.bound_port for spec, listener in server.bound_listeners()}


def client_context(data_dir: Path) -> ssl.SSLContext:
    """A client context that trusts the server's self-signed certificate and checks names."""
    return ssl.create_default_context(cafile=str(data_dir / "tls" / "cert.pem"))


def write_config(
    path: Path,
    data_dir: Path,
    extra: str = "",
    ports: dict[str, int] | None = None,
    *,
    top: str = "",
    hostname: str = "mail.test",
) -> Path:
    """``top``: top-level keys; ``extra``: tables (after ``[log]`` and ``[dns]``)."""
    ports = ports or {role.value: 0 for role in ROLES}
    listeners = "".join(
        f'\n[[listeners]]\naddress = "127.0.0.1"\nport = {port}\nrole = "{role}"\n'
        for role, port in ports.items()
    )
    log = data_dir.parent / "postroom.log"
    if "[api]" not in extra:
        extra = f"[api]\nport = 0\n{extra}"
    path.write_text(
        f'hostname = "{hostname}"\ndata_dir = "{data_dir}"\n{top}'
        f'[log]\nfile = "{log}"\n'
        f'[dns]\nnameservers = ["{NO_DNS}"]\ntimeout = 0.5\n'
        f"{extra}\n{listeners}"
    )
    return path


# The ready line (docs/configuration.md): "postroom VERSION ready: SMTP on ADDRESS:PORT
# ROLE[ (TLS)], ...[; POP3 on ADDRESS:PORT ROLE (...), ...][; IMAP on ...]; API URL|off;
# certificate ...; config ...; data in DIR; N process[es]".
_READY = re.compile(
    r"postroom \S+ ready: SMTP on (?P<smtp>[^;]*);(?: POP3 on (?P<pop3>[^;]*);)?"
    r"(?: IMAP on (?P<imap>[^;]*);)? API (?P<api>\S+);"
)
_LISTENER = re.compile(r"(?P<address>\S+):(?P<port>\d+) (?P<role>mx|submissions?|pop3s?|imaps?)\b")
_API_PORT = re.compile(r"^http://\S+:(\d+)$")


def ready_ports(line: str) -> tuple[dict[str, int], int | None] | None:
    """(SMTP port by role, API port or None) from a log text holding the ready line."""
    match = _READY.search(line)
    if match is None:
        return None
    listed = ", ".join((match["smtp"], match["pop3"] or "", match["imap"] or ""))
    ports = {m["role"]: int(m["port"]) for m in _LISTENER.finditer(listed)}
    api = _API_PORT.match(match["api"])
    return ports, int(api.group(1)) if api else None


@dataclass
class RunningProcess:
    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    log: Path
    api_port: int | None = None

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)


def start_process(
    config: Path,
    log: Path,
    timeout: float = 30,
    serve_args: Sequence[str] = (),
    *,
    python: str = sys.executable,
) -> RunningProcess:
    """Start `postroom serve --config config [serve_args]` and wait until its log says it
    is ready. ``python``: the interpreter of another installation (a venv's)."""
    offset = log.stat().st_size if log.exists() else 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    stderr = log.with_suffix(".stderr")
    with stderr.open("ab") as err_file:
        process = subprocess.Popen(
            [python, "-m", "postroom", "serve", "--config", str(config), *serve_args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err_file,
            env=env,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = stderr.read_text()
            raise RuntimeError(f"postroom serve exited {process.returncode}: {err}")
        text = log.read_text()[offset:] if log.exists() else ""
        if (ready := ready_ports(text)) is not None:
            ports, api_port = ready
            return RunningProcess(process, ports, log, api_port)
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("postroom serve did not become ready")


@contextmanager
def smtp_client(port: int) -> Iterator[smtplib.SMTP]:
    client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    try:
        yield client
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


def free_port() -> int:
    """A loopback port nothing listens on now (bound, then closed): for a server that
    must be told its port before it starts, or a mailer pointed at a closed port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for(condition: Callable[[], bool], within: float = 15.0) -> None:
    """Poll another thread's or process's state (no clock to inject across processes)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def run_cli(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`postroom --config config ARGS...` as a real process; the caller checks the result."""
    return subprocess.run(
        [sys.executable, "-m", "postroom", "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cli_out(config: Path, *args: str, stdin: str | None = None) -> str:
    """``run_cli`` that must succeed: its standard output."""
    done = run_cli(config, *args, stdin=stdin)
    assert done.returncode == 0, done.stderr
    return done.stdout

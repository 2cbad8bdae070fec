"""IMAP at scale against `postroom serve`: SELECT of a large INBOX, and many IDLE
sessions on it.

    python3 bench/imap.py                          # 100,000 messages, 1,000 IDLE sessions
    python3 bench/imap.py --messages 2000 --idle 50

The INBOX is filled by writing Maildir files directly (as another tool would leave them,
with their S= and W= sizes), so the first SELECT also assigns every UID (the "cold" row);
the second SELECT reads the UID list back (the "warm" row), and a third comes after a
restart of the server (the list read from disk by a new process). The IDLE sessions log in
over implicit TLS (imaps), SELECT the folder and IDLE; the server's resident memory is read
from /proc before and after. Then one message is delivered over SMTP (the mx listener,
as any mail arrives) and timed from the end of DATA's 250 until every session has read its
`* N EXISTS`; then one is written into new/ by another process (as another mail tool
would), which the server finds by its poll. The load average is printed with the figures:
timings on a busy machine are noisy, memory less so. Standard library only, like the rest
of bench/; postroom from the repository's .venv (--postroom-python).
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import os
import resource
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
USER, PASSWORD, DOMAIN = "bench@bench.test", "bench-pass", "bench.test"
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cli(python: Path, config: Path, *args: str, stdin: str | None = None) -> None:
    done = subprocess.run(
        [str(python), "-m", "postroom", "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"postroom {' '.join(args)} failed: {done.stderr.strip()}")


def fill_inbox(maildir: Path, count: int, *, subfolder: str = "cur") -> None:
    """``count`` messages of about 2 KiB, as another tool leaves them: seen in ``cur/``,
    or new in ``new/``."""
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    body = b"x" * 1900 + b"\n"
    now = int(time.time())
    info = ":2,S" if subfolder == "cur" else ""
    for n in range(count):
        data = b"From: a@example.org\nSubject: message %d\n\n" % n + body
        crlf = len(data) + data.count(b"\n")
        name = f"{now - count + n}.M{n:06d}P{os.getpid()}Q{n}.bench,S={len(data)},W={crlf}{info}"
        (maildir / subfolder / name).write_bytes(data)


def start(
    python: Path, root: Path, ports: dict[str, int], *, setup: bool = True
) -> subprocess.Popen[bytes]:
    config = root / "postroom.toml"
    listeners = "".join(
        f'[[listeners]]\naddress = "127.0.0.1"\nport = {port}\nrole = "{role}"\n'
        for role, port in ports.items()
    )
    config.write_text(
        f'hostname = "localhost"\ndata_dir = "{root / "data"}"\n'
        '[api]\nenabled = false\n[log]\nlevel = "warning"\n'
        "[limits]\nmax_connections = 20000\nmax_connections_per_ip = 20000\n"
        # logins at once count as failures until checked: let a thousand in together
        "[limits.auth]\nmax_failures = 100000\nmax_account_failures = 100000\n"
        f"[mailboxes]\nimap_autologout = 3600.0\n{listeners}"
    )
    if setup:
        cli(python, config, "domain", "add", DOMAIN)
        cli(python, config, "user", "add", USER, "--password-stdin", stdin=PASSWORD + "\n")
    with open(root / "postroom.out", "ab") as out:
        process = subprocess.Popen(
            [str(python), "-m", "postroom", "--config", str(config), "serve"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", ports["imaps"])) == 0:
                return process
        if process.poll() is not None:
            raise SystemExit((root / "postroom.out").read_text())
        time.sleep(0.1)
    raise SystemExit("postroom serve did not start")


def client_tls(root: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(root / "data" / "tls" / "cert.pem"))


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid``, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_select(root: Path, port: int, server: int) -> str:
    """SELECT INBOX: the wall time, and the server's CPU time (the steadier figure on a
    shared machine)."""
    client = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=client_tls(root))
    client.login(USER, PASSWORD)
    started, cpu = time.perf_counter(), cpu_seconds(server)
    typ, data = client.select("INBOX", readonly=True)
    took, used = time.perf_counter() - started, cpu_seconds(server) - cpu
    assert typ == "OK", data
    client.logout()
    return f"{took:.3f} s (server CPU {used:.2f} s)"


Session = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def idle_session(port: int, context: ssl.SSLContext, folder: str) -> Session:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    await reader.readline()
    for line in (f"a LOGIN {USER} {PASSWORD}", f"b SELECT {folder}", "c IDLE"):
        writer.write(line.encode() + b"\r\n")
        tag = line[0].encode()
        while True:
            answer = await reader.readline()
            if answer.startswith(b"+"):
                break
            if answer.startswith(tag + b" "):
                if not answer.startswith(tag + b" OK"):
                    raise SystemExit(f"{line.split()[1]} refused: {answer!r}")
                break
    return reader, writer


async def _wait_exists(reader: asyncio.StreamReader, woken: list[float]) -> None:
    while True:
        line = await reader.readline()
        if not line or line.endswith(b"EXISTS\r\n"):
            woken.append(time.perf_counter())
            return


def deliver_by_smtp(port: int) -> float:
    """One message to the bench user over the mx listener; the time DATA was accepted."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.sendmail(
            "sender@example.org",
            [USER],
            b"From: sender@example.org\r\nTo: " + USER.encode() + b"\r\n"
            b"Subject: wake up\r\n\r\nnew mail\r\n",
        )
        return time.perf_counter()


async def wake_all(sessions: list[Session], deliver: Callable[[], float], how: str) -> None:
    """Deliver once; report how long until every session read its EXISTS."""
    woken: list[float] = []
    # the caller holds the tasks: the loop keeps only a weak reference
    tasks = [asyncio.ensure_future(_wait_exists(reader, woken)) for reader, _ in sessions]
    delivered = await asyncio.to_thread(deliver)
    await asyncio.wait(tasks, timeout=60)
    for task in tasks:
        task.cancel()
    times = sorted(moment - delivered for moment in woken)
    median = times[len(times) // 2] if times else float("nan")
    last = times[-1] if times else float("nan")
    print(
        f"woken by {how:<22} {len(times)} of {len(sessions)}: median {median:.3f} s,"
        f" the last {last:.3f} s after it  (load {load()})"
    )


def load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


async def idle_many(
    root: Path,
    port: int,
    count: int,
    *,
    server: int,
    maildir: Path,
    folder: str,
    smtp_port: int,
) -> None:
    context = client_tls(root)
    sessions: list[Session] = []

    async def open_sessions(number: int) -> None:
        for first in range(0, number, 50):  # in waves: the handshakes share two cores
            wave = min(50, number - first)
            sessions.extend(
                await asyncio.gather(*(idle_session(port, context, folder) for _ in range(wave)))
            )

    # A few sessions first: the server's worker threads and TLS state exist once for all.
    warm = min(10, count)
    await open_sessions(warm)
    await asyncio.sleep(1)
    before = rss_kib(server)
    started = time.perf_counter()
    await open_sessions(count - warm)
    took = time.perf_counter() - started
    await asyncio.sleep(2)
    after = rss_kib(server)
    measured = count - warm
    growth = after - before
    print(f"IDLE sessions              {count} on {folder}, opened in {took:.1f} s")
    print(f"server RSS after {warm:<3} sessions {before / 1024:.1f} MiB")
    print(
        f"server RSS with all        {after / 1024:.1f} MiB (+{growth / 1024:.1f} MiB for"
        f" {measured}, {growth / max(measured, 1):.1f} KiB each)"
    )
    if folder == "INBOX":
        await wake_all(sessions, lambda: deliver_by_smtp(smtp_port), "an SMTP delivery")
    where = maildir if folder == "INBOX" else maildir / f".{folder}"

    def drop_file() -> float:
        fill_inbox(where, 1, subfolder="new")
        return time.perf_counter()

    await wake_all(sessions, drop_file, "a file in new/ (poll)")
    for _, writer in sessions:
        writer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument(
        "--idle-folder",
        default="INBOX",
        help="the folder the IDLE sessions select (default INBOX, the large one; Archive:"
        " a small one)",
    )
    parser.add_argument(
        "--template",
        type=Path,
        help="a directory to keep the written INBOX in and hard-link it from on the next"
        " run (writing 100,000 files takes a while)",
    )
    parser.add_argument("--postroom-python", type=Path, default=REPO / ".venv" / "bin" / "python")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * args.idle + 256)), hard))
    print(f"load average at the start: {load()}")
    with tempfile.TemporaryDirectory(prefix="postroom-imap-bench-") as tmp:
        root = Path(tmp)
        ports = {"mx": free_port(), "imap": free_port(), "imaps": free_port()}
        server = start(args.postroom_python, root, ports)
        try:
            inbox = root / "data" / "mail" / DOMAIN / "bench" / "Maildir"
            started = time.perf_counter()
            prepare_inbox(inbox, args.messages, args.template)
            took = time.perf_counter() - started
            print(f"INBOX of {args.messages} messages written in {took:.1f} s")
            print(f"SELECT, cold (UIDs assigned)  {time_select(root, ports['imaps'], server.pid)}")
            print(f"SELECT, warm                  {time_select(root, ports['imaps'], server.pid)}")
            server.terminate()
            server.wait(30)
            server = start(args.postroom_python, root, ports, setup=False)
            print(f"SELECT, after a restart       {time_select(root, ports['imaps'], server.pid)}")
            print(f"SELECT, warm                  {time_select(root, ports['imaps'], server.pid)}")
            print(f"load average: {load()}")
            if not args.idle:
                return 0
            idle = idle_many(
                root,
                ports["imaps"],
                args.idle,
                server=server.pid,
                maildir=inbox,
                folder=args.idle_folder,
                smtp_port=ports["mx"],
            )
            asyncio.run(idle)
        finally:
            server.terminate()
            server.wait(30)
            log = (root / "postroom.out").read_text()
            if "Traceback" in log or "ERROR" in log:
                print(log[-3000:])
    return 0


def prepare_inbox(inbox: Path, count: int, template: Path | None) -> None:
    if template is None:
        fill_inbox(inbox, count)
        return
    if not (template / "cur").is_dir() or len(os.listdir(template / "cur")) != count:
        shutil.rmtree(template, ignore_errors=True)
        fill_inbox(template, count)
    for sub in ("tmp", "new", "cur"):
        (inbox / sub).mkdir(parents=True, exist_ok=True)
    for name in os.listdir(template / "cur"):
        os.link(template / "cur" / name, inbox / "cur" / name)


if __name__ == "__main__":
    sys.exit(main())

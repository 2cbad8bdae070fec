"""A paced SMTP client on raw non-blocking sockets, for latency at a fixed offered rate.

Message i is due at ``start + i / rate`` (open loop): it starts on the first idle
connection at or after that instant. What is measured is the time from the moment the
last byte of DATA (``.<CRLF>``) is handed to the kernel until the ``250`` is read: the
server's accept latency, durability included. One thread, one selector, no asyncio.
"""

from __future__ import annotations

import collections
import math
import resource
import selectors
import socket
import time
from dataclasses import dataclass, field

__all__ = ["PacedResult", "message_bytes", "percentile", "run_paced"]

LATE = 0.010  # a message that starts more than this after its slot is counted late


def message_bytes(sender: str, recipient: str, size: int) -> bytes:
    """Headers and ``size`` bytes of body in 78-character lines, ending with ``.<CRLF>``."""
    head = f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: latency\r\n\r\n".encode()
    line = b"X" * 76 + b"\r\n"
    lines, rest = divmod(size, len(line))
    body = line * lines + (b"Y" * max(rest - 2, 0) + b"\r\n" if rest else b"")
    return head + body + b".\r\n"


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (0 < pct <= 100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


@dataclass
class PacedResult:
    latencies: list[float] = field(default_factory=list)  # seconds
    errors: int = 0
    late: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.out = b""
        self.state = "greeting"
        self.sent_at = 0.0
        self.alive = True
        self.events = selectors.EVENT_READ

    def reply(self) -> bytes | None:
        """The last line of the next complete reply in the buffer, consumed; or None."""
        start = 0
        while True:
            end = self.buf.find(b"\r\n", start)
            if end < 0:
                return None
            line = bytes(self.buf[start:end])
            start = end + 2
            if len(line) < 4 or line[3:4] == b" ":
                del self.buf[:start]
                return line


class _Client:
    def __init__(self, port: int, message: bytes, commands: tuple[bytes, bytes]) -> None:
        self.port = port
        self.message = message
        self.mail, self.rcpt = commands
        self.selector = selectors.DefaultSelector()
        self.idle: collections.deque[_Conn] = collections.deque()
        self.result = PacedResult()
        self.finished = 0

    def open(self, count: int, timeout: float) -> None:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.selector.register(sock, selectors.EVENT_READ, _Conn(sock))
        deadline = time.monotonic() + timeout
        while len(self.idle) < count and time.monotonic() < deadline:
            self.poll(0.1)
        if len(self.idle) < count:
            raise RuntimeError(f"only {len(self.idle)} of {count} connections got ready")

    def send(self, conn: _Conn, data: bytes) -> None:
        conn.out += data
        self.flush(conn)

    def flush(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            sent = 0
        conn.out = conn.out[sent:]
        if not conn.out and conn.state == "body":
            conn.sent_at = time.perf_counter()
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
        if events != conn.events:
            conn.events = events
            self.selector.modify(conn.sock, events, conn)

    def begin(self, conn: _Conn) -> None:
        conn.state = "mail"
        self.send(conn, self.mail)

    def on_reply(self, conn: _Conn, line: bytes) -> None:
        if conn.state == "idle":  # unasked: a 421 before closing, say
            conn.alive = False
            return
        code = line[:3]
        expected = {
            "greeting": b"220",
            "ehlo": b"250",
            "mail": b"250",
            "rcpt": b"250",
            "data": b"354",
            "body": b"250",
            "rset": b"250",
        }[conn.state]
        if code != expected:
            if conn.state in ("greeting", "ehlo", "rset"):
                conn.alive = False
                return
            self.result.errors += 1
            self.finished += 1
            conn.state = "rset"
            self.send(conn, b"RSET\r\n")
            return
        if conn.state == "greeting":
            conn.state = "ehlo"
            self.send(conn, b"EHLO client.test\r\n")
        elif conn.state == "mail":
            conn.state = "rcpt"
            self.send(conn, self.rcpt)
        elif conn.state == "rcpt":
            conn.state = "data"
            self.send(conn, b"DATA\r\n")
        elif conn.state == "data":
            conn.state = "body"
            self.send(conn, self.message)
        else:
            if conn.state == "body":
                self.result.latencies.append(time.perf_counter() - conn.sent_at)
                self.finished += 1
            conn.state = "idle"
            self.idle.append(conn)

    def poll(self, timeout: float) -> None:
        for key, mask in self.selector.select(timeout):
            conn: _Conn = key.data
            if mask & selectors.EVENT_WRITE and conn.out:
                self.flush(conn)
            if not mask & selectors.EVENT_READ:
                continue
            try:
                data = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                self.drop(conn)
                continue
            conn.buf += data
            while conn.alive and (line := conn.reply()) is not None:
                self.on_reply(conn, line)
            if not conn.alive:
                self.drop(conn)

    def drop(self, conn: _Conn) -> None:
        if conn.state not in ("idle", "greeting", "ehlo", "rset"):
            self.result.errors += 1
            self.finished += 1
        conn.alive = False
        if conn in self.idle:
            self.idle.remove(conn)
        self.selector.unregister(conn.sock)
        conn.sock.close()

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            conn: _Conn = key.data
            try:
                conn.sock.setblocking(True)
                conn.sock.settimeout(1.0)
                conn.sock.sendall(b"QUIT\r\n")
            except OSError:
                pass
            conn.sock.close()
        self.selector.close()


def run_paced(
    port: int,
    *,
    rate: float,
    count: int,
    connections: int,
    message: bytes,
    sender: str,
    recipient: str,
    timeout: float = 600.0,
) -> PacedResult:
    """Offer ``count`` messages at ``rate`` per second over ``connections`` connections."""
    commands = (f"MAIL FROM:<{sender}>\r\n".encode(), f"RCPT TO:<{recipient}>\r\n".encode())
    client = _Client(port, message, commands)
    client.open(connections, 30.0)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    issued = 0
    waiting: collections.deque[float] = collections.deque()  # due times not yet started
    try:
        while client.finished < count:
            now = time.perf_counter()
            if now - start > timeout:
                raise RuntimeError(f"paced run did not finish within {timeout:.0f}s")
            while issued < count and start + issued / rate <= now:
                waiting.append(start + issued / rate)
                issued += 1
            while waiting and client.idle:
                due = waiting.popleft()
                if now - due > LATE:
                    client.result.late += 1
                client.begin(client.idle.popleft())
            if not client.selector.get_map():
                raise RuntimeError("every connection was closed")
            next_due = start + issued / rate if issued < count else now + 0.05
            client.poll(min(max(next_due - now, 0.0), 0.05))
    finally:
        client.result.elapsed = time.perf_counter() - start
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
        client.result.cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (
            cpu_after.ru_stime - cpu_before.ru_stime
        )
        client.close()
    return client.result

"""A real DNS server on loopback (UDP and TCP, one port) serving a dict zone.

    with DnsServer({"example.test": {"MX": ["10 mx1.example.test"]},
                    "mx1.example.test": {"A": ["127.0.0.2"]}}) as dns:
        resolver = DnsResolver(dns.settings(timeout=0.5))

A name missing from the zone answers NXDOMAIN; a name present without the asked type
answers NOERROR with no records (NODATA). ``servfail`` and ``drop`` (no answer at all:
the client times out) can be set per name; ``nxdomain`` forces NXDOMAIN for a name that
is in the zone. ``queries`` records every (name, type) asked. Everything may be changed
while the server runs. It runs in a thread, so it serves sync and async tests alike.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from collections.abc import Iterable, Mapping
from typing import Self

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from postroom.config.settings import DnsSettings

__all__ = ["DnsServer"]

Zone = Mapping[str, Mapping[str, Iterable[str]]]


def _key(name: str) -> str:
    return name.rstrip(".").lower()


def bind_udp_and_tcp(host: str) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to one free port on ``host``; the TCP one not yet
    listening. The free UDP port may be taken for TCP by another process: try another."""
    for _ in range(20):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((host, 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((host, udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        return udp, tcp
    raise RuntimeError("no port free for both UDP and TCP")


class DnsServer:
    def __init__(self, zone: Zone | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.zone: dict[str, dict[str, list[str]]] = {}
        for name, records in (zone or {}).items():
            for rdtype, values in records.items():
                self.add(name, rdtype, *values)
        self.servfail: set[str] = set()
        self.nxdomain: set[str] = set()
        self.drop: set[str] = set()
        self.queries: list[tuple[str, str]] = []
        self.errors: list[Exception] = []
        self.port = 0
        self._udp, self._tcp = self._bind()
        self._stop_r, self._stop_w = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="dns-server", daemon=True)

    # -- the zone --------------------------------------------------------------------------
    def add(self, name: str, rdtype: str, *values: str) -> None:
        self.zone.setdefault(_key(name), {}).setdefault(rdtype.upper(), []).extend(values)

    def set(self, name: str, rdtype: str, *values: str) -> None:
        self.zone.setdefault(_key(name), {})[rdtype.upper()] = list(values)

    def settings(self, timeout: float = 1.0) -> DnsSettings:
        return DnsSettings(nameservers=(self.address,), timeout=timeout)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- life ------------------------------------------------------------------------------
    def start(self) -> DnsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop_w.send(b"x")
        self._thread.join(5)
        for sock in (self._udp, self._tcp, self._stop_r, self._stop_w):
            sock.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- serving ---------------------------------------------------------------------------
    def _bind(self) -> tuple[socket.socket, socket.socket]:
        udp, tcp = bind_udp_and_tcp(self.host)
        tcp.listen(16)
        self.port = udp.getsockname()[1]
        return udp, tcp

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            for sock in (self._udp, self._tcp, self._stop_r):
                selector.register(sock, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is self._stop_r:
                        return
                    try:
                        if key.fileobj is self._udp:
                            data, peer = self._udp.recvfrom(65535)
                            if (reply := self.answer(data)) is not None:
                                self._udp.sendto(reply, peer)
                        else:
                            self._serve_tcp()
                    except Exception as exc:  # keep serving; the test can look at errors
                        self.errors.append(exc)

    def _serve_tcp(self) -> None:
        conn, _ = self._tcp.accept()
        with conn:
            conn.settimeout(2)
            try:
                while header := conn.recv(2, socket.MSG_WAITALL):
                    (length,) = struct.unpack("!H", header)
                    if (reply := self.answer(conn.recv(length, socket.MSG_WAITALL))) is None:
                        return
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
            except OSError:
                return

    def answer(self, wire: bytes) -> bytes | None:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = _key(question.name.to_text())
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        if name in self.drop:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name in self.nxdomain or name not in self.zone:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif values := self.zone[name].get(rdtype):
            rrset = dns.rrset.from_text_list(
                question.name, 300, dns.rdataclass.IN, question.rdtype, values,
                origin=dns.name.root, relativize=False,
            )  # fmt: skip
            response.answer.append(rrset)
        return response.to_wire()

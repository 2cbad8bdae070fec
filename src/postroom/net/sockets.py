"""Listening sockets bound before the servers that use them start (the API, and the SMTP
listeners shared with accept workers).

A bind that fails names the address and port, worded as asyncio words it for the SMTP
listeners it binds itself, so every "cannot listen" line says which one is taken.
"""

from __future__ import annotations

import socket

__all__ = ["listening_socket"]


def listening_socket(
    address: str, port: int, *, backlog: int, v6only: bool = False
) -> socket.socket:
    """A non-blocking TCP socket listening on ``address``:``port`` (0: a free port);
    ``v6only``: an IPv6 address takes no IPv4 connections (as asyncio's servers bind)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and v6only:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or str(exc)).lower()
        raise OSError(
            exc.errno, f"error while attempting to bind on address {(address, port)!r}: {reason}"
        ) from None
    return sock

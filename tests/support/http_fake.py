"""A small real HTTP/1.1 server on loopback for provider-API fakes.

A fake is a function from the request to a ``Reply``; the server records every request
and can also hold an answer back (``Reply.stall``: the client's timeout fires) or close
the connection without one (``Reply.drop``). Runs in its own thread, so synchronous and
asynchronous clients alike talk to it over a real socket.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["FakeHttp", "Reply", "Request", "serve"]


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query
    query: dict[str, list[str]]
    headers: Mapping[str, str]  # names lowercased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode(), keep_blank_values=True, strict_parsing=False)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    stall: bool = False  # never answer (until the server stops)
    drop: bool = False  # close the connection without an answer

    @classmethod
    def json(cls, status: int, data: object, **headers: str) -> Reply:
        return cls(
            status, json.dumps(data).encode(), {"Content-Type": "application/json", **headers}
        )


Handler = Callable[[Request], Reply]


class FakeHttp:
    def __init__(self, handler: Handler, port: int = 0) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self._stop = threading.Event()
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query, keep_blank_values=True),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length),
                )
                fake.requests.append(request)
                reply = fake.handler(request)
                if reply.stall:
                    fake._stop.wait(30)
                    self.close_connection = True
                    return
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = _serve  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeHttp:
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def serve(handler: Handler, port: int = 0) -> Iterator[FakeHttp]:
    """``port``: a given one (a receiver that comes up where a URL already points)."""
    fake = FakeHttp(handler, port).start()
    try:
        yield fake
    finally:
        fake.stop()

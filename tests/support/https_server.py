"""A real HTTPS server on loopback serving fixed files, with a certificate from a trustme CA.

    with HttpsServer(ca, "mta-sts.example.test", {"/.well-known/mta-sts.txt": b"..."}) as web:
        fetcher = PolicyFetcher(resolver, port=web.port, tls=web.client_context())

A path missing from ``files`` answers 404; ``requests`` records (path, Host header).
"""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import trustme

__all__ = ["HttpsServer"]


class HttpsServer:
    def __init__(self, ca: trustme.CA, hostname: str, files: dict[str, bytes]) -> None:
        self.ca = ca
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append((self.path, self.headers.get("Host")))
                body = owner.files.get(self.path)
                self.send_response(404 if body is None else 200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, format: str, *args: object) -> None:
                pass

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(hostname).configure_cert(context)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def __enter__(self) -> HttpsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

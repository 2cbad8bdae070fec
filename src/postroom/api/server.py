"""The API's HTTP server: uvicorn on the running event loop, on a socket bound here.

Binding the socket ourselves gives a plain OSError naming the address for a busy port
(uvicorn would exit the process) and the real port when 0 was asked for, before the
server says it is ready: connections made before uvicorn accepts wait in the backlog.

uvicorn is driven only through its documented API: ``Config``, ``Server`` and
``Server.serve(sockets=...)``, stopped by setting ``Server.should_exit`` (as its own
signal handler does). While it serves in the main thread, ``serve()`` puts its handler on
SIGINT and SIGTERM and, once stopped, puts back the handlers it found and raises the
signals it caught again (uvicorn >= 0.29). ``postroom serve`` installs its handlers before
the API starts, so a signal reaches them (through the event loop's wake-up descriptor)
as well as uvicorn, and the server's own stop keeps its order.
"""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from starlette.types import ASGIApp

from postroom.net.sockets import listening_socket

__all__ = ["ApiServer"]


class ApiServer:
    def __init__(self, app: ASGIApp, address: str, port: int, *, grace: float) -> None:
        self.app = app
        self._address = address
        self._port = port
        self._config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            ws="none",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=max(1, int(grace)),
        )
        self._bound: tuple[str, int] | None = None
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._serving: asyncio.Task[None] | None = None

    @property
    def bound(self) -> tuple[str, int]:
        assert self._bound is not None
        return self._bound

    async def start(self) -> None:
        """Bind the socket (OSError naming the address when taken) and start serving."""
        sock = listening_socket(self._address, self._port, backlog=128)
        host, port = sock.getsockname()[:2]
        self._bound = str(host), int(port)
        self._serve(sock)

    def _serve(self, sock: socket.socket) -> None:
        self._socket = sock
        server = uvicorn.Server(self._config)
        self._server = server
        self._serving = asyncio.create_task(server.serve(sockets=[sock]), name="api-serve")

    async def run(self) -> None:
        """Until stop(): the supervisor's task for the API. Should uvicorn fail, this
        raises, and the next call serves again on a socket bound to the same port."""
        serving = self._serving
        if serving is None:
            return
        if serving.done() and (serving.cancelled() or serving.exception() is not None):
            if self._socket is not None:  # uvicorn closes it unless it failed first
                self._socket.close()
            self._serve(listening_socket(self._address, self.bound[1], backlog=128))
            serving = self._serving
            assert serving is not None
        # shielded: the supervisor cancels its task at the end; stop() ends uvicorn itself
        await asyncio.shield(serving)

    async def stop(self) -> None:
        """Stop accepting; requests in flight finish (bounded by the grace time)."""
        server, serving = self._server, self._serving
        self._server = self._serving = None
        if server is None or serving is None:
            return
        server.should_exit = True  # serve() returns after its graceful shutdown
        await asyncio.gather(serving, return_exceptions=True)

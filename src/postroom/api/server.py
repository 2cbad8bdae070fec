"""The API's HTTP server: uvicorn on the running event loop, on a socket bound here.

Binding the socket ourselves gives a plain OSError naming the address for a busy port
(uvicorn would exit the process) and the real port when 0 was asked for. Driving
uvicorn through ``startup``/``main_loop``/``shutdown`` rather than ``serve()`` leaves
the signal handlers to ``postroom serve``, and lets ``run()`` (uvicorn's main loop) be a
task of the server's supervisor, restarted should it fail.
"""

from __future__ import annotations

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
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None

    @property
    def bound(self) -> tuple[str, int]:
        assert self._socket is not None
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        sock = listening_socket(self._address, self._port, backlog=128)
        self._socket = sock
        config = self._config
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        self._server = server

    async def run(self) -> None:
        """uvicorn's housekeeping loop (its date header, connection limits) until stop()."""
        if self._server is not None:
            await self._server.main_loop()

    async def stop(self) -> None:
        """Stop accepting; requests in flight finish (bounded by the grace time)."""
        server, sock = self._server, self._socket
        self._server = self._socket = None
        if server is not None:
            server.should_exit = True  # run() returns at its next tick
            await server.shutdown(sockets=[sock] if sock else None)
        if sock is not None:
            sock.close()

"""``Dashboard``: what the API's server mounts under /dashboard, built on its first request.

The dashboard's pages, Jinja2 and the code they call (the domain doctor, its HTTP
client) cost the primary process several MiB; most servers are never browsed, or are
browsed long after they start. What can be wrong with the dashboard's configuration is
found at start all the same: the settings are checked when read, and its key is read
(or made) before this is built.
"""

from __future__ import annotations

import asyncio
import importlib

from starlette.types import ASGIApp, Receive, Scope, Send

from postroom.dashboard.deps import DashboardDeps

__all__ = ["Dashboard"]


class Dashboard:
    """The dashboard's ASGI app, made by ``create_dashboard`` when a request first comes."""

    def __init__(self, deps: DashboardDeps) -> None:
        self.deps = deps
        self.app: ASGIApp | None = None
        self._building = asyncio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self.app or await self._build()
        await app(scope, receive, send)

    async def _build(self) -> ASGIApp:
        async with self._building:  # requests that come while it is built wait for it
            if self.app is None:
                # Imported in a thread: about a second on a busy host, during which the
                # event loop keeps serving this process's SMTP sessions and requests.
                module = await asyncio.to_thread(importlib.import_module, "postroom.dashboard.app")
                self.app = module.create_dashboard(self.deps)
        return self.app

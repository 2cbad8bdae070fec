"""An in-process postroom server on its own event loop thread, for synchronous clients."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol, TypeVar

from postroom.clock import Clock
from postroom.config.settings import Settings
from postroom.directory.apikeys import DEFAULT_SCOPES, ApiKeys, Scope
from postroom.directory.users import Users
from postroom.runtime import Server
from postroom.store import Store
from postroom.store.models import RecipientStatus
from tests.support.servers import ports_by_role

T = TypeVar("T")

__all__ = ["MakeServer", "ServerThread"]


class ServerThread:
    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        *,
        deliver: bool = False,
        store: Store | None = None,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
    ) -> None:
        self.settings = settings
        self.server = Server(settings, clock=clock, deliver=deliver, store=store)
        self.loop = loop_factory()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.ports: dict[str, int] = {}

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def api_port(self) -> int:
        port = self.server.api_port
        assert port is not None, "the API is off"
        return port

    @property
    def store(self) -> Store:
        assert self.server.store is not None
        return self.server.store

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> ServerThread:
        self._thread.start()
        self.call(self.server.start())
        self.ports = ports_by_role(self.server)
        return self

    def stop(self) -> None:
        """Stop the server and its loop; once stopped, again does nothing."""
        if self.loop.is_closed():
            return
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    # -- set-up helpers ------------------------------------------------------------
    def add_domain(self, name: str) -> None:
        self.call(self.store.add_domain(name, 0.0))

    def statuses(self, message_id: str) -> list[RecipientStatus]:
        """The message's recipients' states, in order; none once the message is gone."""
        message = self.call(self.store.message(message_id))
        return [r.status for r in message.recipients] if message is not None else []

    def run_delivery(self) -> int:
        """One pass of the scheduler: claim what is due at the server's clock, deliver it."""
        assert self.server.scheduler is not None
        return self.call(self.server.scheduler.run_once())

    def create_api_key(
        self,
        name: str,
        sender_domains: tuple[str, ...] = (),
        scopes: tuple[Scope, ...] = DEFAULT_SCOPES,
        clock: Clock | None = None,
        *,
        any_sender: bool | None = None,
    ) -> str:
        """A new API key's token; unless told, one without sender domains may send as any."""
        keys = ApiKeys(self.store, clock)
        if any_sender is None:
            any_sender = not sender_domains
        return self.call(keys.create(name, sender_domains, scopes, any_sender=any_sender)).token

    def add_user(self, address: str, password: str, sender_domains: tuple[str, ...] = ()) -> None:
        self.call(Users(self.store).add(address, password, sender_domains))


class MakeServer(Protocol):
    """The ``make_server`` fixture: a started server; settings overrides as keywords."""

    def __call__(
        self,
        clock: Clock | None = None,
        deliver: bool = False,
        *,
        data_dir: Path | None = None,
        store: Store | None = None,
        **overrides: object,
    ) -> ServerThread: ...

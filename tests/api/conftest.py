"""A real postroom server (SMTP, store, intake, the API on uvicorn) on loopback ports,
with a FakeClock, and httpx clients holding API keys."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from postroom.directory.apikeys import DEFAULT_SCOPES, Scope
from tests.conftest import FakeClock
from tests.support.thread import ServerThread


@dataclass
class Api:
    server: ServerThread
    clock: FakeClock
    url: str
    key: str  # API key "app", any sender domain, every scope

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {} if key == "" else {"Authorization": f"Bearer {key or self.key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def create_key(
        self,
        name: str,
        sender_domains: tuple[str, ...] = (),
        scopes: tuple[Scope, ...] = DEFAULT_SCOPES,
        *,
        any_sender: bool | None = None,
    ) -> str:
        """A key; without sender domains one that may send as any domain, as most tests want."""
        return self.server.create_api_key(
            name, sender_domains, scopes, self.clock, any_sender=any_sender
        )


@pytest.fixture
def make_api(make_server: Callable[..., ServerThread], fake_clock: FakeClock) -> Callable[..., Api]:
    def make(**overrides: object) -> Api:
        server = make_server(clock=fake_clock, **overrides)
        url = f"http://127.0.0.1:{server.api_port}"
        api = Api(server, fake_clock, url, "")
        api.key = api.create_key("app", scopes=tuple(Scope))
        return api

    return make


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


@pytest.fixture
def client(api: Api) -> Iterator[httpx.Client]:
    with api.client() as http:
        yield http


MESSAGE = {
    "from": "Shop <shop@example.com>",
    "to": ["a@example.net"],
    "subject": "Hello",
    "text": "plain body",
}

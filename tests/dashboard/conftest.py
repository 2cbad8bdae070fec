"""A real server (SMTP, store, the API's uvicorn with the dashboard mounted) on loopback
ports with a FakeClock, an admin, and an httpx client that logs in like a browser."""

from __future__ import annotations

import html
import re
import smtplib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import pytest

from postroom.directory import Admins
from tests.conftest import FakeClock
from tests.support.thread import MakeServer, ServerThread

ADMIN, PASSWORD = "ada", "correct horse battery"
_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def csrf_of(page: str) -> str:
    found = _CSRF.search(page)
    assert found is not None, "the page has no form with a CSRF token"
    return html.unescape(found[1])


@dataclass
class Dash:
    server: ServerThread
    clock: FakeClock
    url: str
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=10, follow_redirects=False)

    def login(self, name: str = ADMIN, password: str = PASSWORD) -> httpx.Response:
        token = csrf_of(self.http.get("/dashboard/login").text)
        return self.http.post(
            "/dashboard/login", data={"csrf": token, "name": name, "password": password}
        )

    def csrf(self, path: str = "/dashboard/") -> str:
        return csrf_of(self.http.get(path).text)

    def send(self, message: bytes, to: str = "bob@example.test") -> str:
        """A message over SMTP to the mx listener; its queue id."""
        before = self._ids()
        with smtplib.SMTP("127.0.0.1", self.server.ports["mx"], timeout=10) as smtp:
            smtp.sendmail("shop@example.com", [to], message)
        (new,) = self._ids() - before
        return new

    def _ids(self) -> set[str]:
        return {m.id for m in self.server.call(self.server.store.messages(limit=10_000))}


class MakeDash(Protocol):
    def __call__(self, *, admin: bool = True, deliver: bool = False, **settings: Any) -> Dash: ...


@pytest.fixture
def make_dash(make_server: MakeServer, fake_clock: FakeClock) -> Iterator[MakeDash]:
    made: list[Dash] = []

    def make(*, admin: bool = True, deliver: bool = False, **settings: Any) -> Dash:
        server = make_server(clock=fake_clock, deliver=deliver, **settings)
        server.add_domain("example.test")
        server.add_user("bob@example.test", "bob-password")
        if admin:
            server.call(Admins(server.store, fake_clock).add(ADMIN, PASSWORD))
        dash = Dash(server, fake_clock, f"http://127.0.0.1:{server.api_port}")
        made.append(dash)
        return dash

    yield make
    for dash in made:
        dash.http.close()


@pytest.fixture
def dash(make_dash: MakeDash) -> Dash:
    return make_dash()

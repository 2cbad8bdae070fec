"""Every route, every method: a 405 names in Allow exactly the methods the path takes."""

from __future__ import annotations

import re

import httpx
from starlette.applications import Starlette
from starlette.routing import Route

from tests.api.conftest import Api

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def routed_paths(api: Api) -> list[str]:
    served = api.server.server.api
    assert served is not None and isinstance(served.app, Starlette)
    routes = [r for r in served.app.routes if isinstance(r, Route)]
    # A path parameter becomes a value that exists nowhere: the method is judged first.
    return [re.sub(r"\{[^}]+\}", "NOSUCHID", r.path) for r in routes]


def test_405_answers_allow_every_method_the_path_takes(api: Api, client: httpx.Client) -> None:
    paths = routed_paths(api)
    assert "/api/v1/messages/NOSUCHID" in paths and "/hooks/NOSUCHID" in paths
    for path in paths:
        answers = {method: client.request(method, path) for method in METHODS}
        taken = {m for m, answer in answers.items() if answer.status_code != 405}
        assert taken, path
        for method, answer in answers.items():
            if answer.status_code == 405:
                assert answer.headers["allow"] == ", ".join(sorted(taken)), (method, path)
                if method != "HEAD":
                    assert answer.json()["error"]["code"] == "method_not_allowed"


def test_put_on_a_message_allows_get_head_and_delete(client: httpx.Client) -> None:
    answer = client.put("/api/v1/messages/NOSUCHID")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "DELETE, GET, HEAD"
    assert client.put("/api/v1/messages").headers["allow"] == "GET, HEAD, POST"


def test_head_answers_as_get_without_a_body(client: httpx.Client) -> None:
    answer = client.head("/api/v1/messages")
    assert answer.status_code == 200
    assert answer.content == b""
    assert client.head("/api/v1/health").status_code == 200

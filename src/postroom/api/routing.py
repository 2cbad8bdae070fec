"""Routes from a table of (method, path, endpoint): one Starlette route per path.

Starlette answers a wrong method with the ``Allow`` of the first route whose path
matches, so two routes on one path (GET and DELETE of a message) would each leave the
other's method out. One route per path holding every method fixes that for every path
at once; HEAD is served by GET's endpoint (RFC 9110 9.3.2).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["Endpoint", "routes_by_path"]

Endpoint = Callable[[Request], Awaitable[Response]]


def routes_by_path(table: Iterable[tuple[str, str, Endpoint]]) -> list[Route]:
    paths: dict[str, dict[str, Endpoint]] = {}
    for method, path, endpoint in table:
        methods = paths.setdefault(path, {})
        if method in methods:
            raise ValueError(f"{method} {path} is routed twice")
        methods[method] = endpoint
    return [
        Route(path, _dispatch(methods), methods=list(methods)) for path, methods in paths.items()
    ]


def _dispatch(methods: Mapping[str, Endpoint]) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await methods[method](request)

    return endpoint

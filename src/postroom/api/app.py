"""create_app(deps): the routes, and error handlers that answer every failure in the one
JSON shape (``errors``); no traceback reaches a client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from postroom.api.deps import ApiDeps
from postroom.api.errors import (
    ApiError,
    api_error_response,
    http_exception,
    internal_error,
    store_error,
)
from postroom.api.health import readiness_route
from postroom.api.hooks import ProviderHooks
from postroom.api.messages import MessageApi
from postroom.api.openapi import openapi_document
from postroom.errors import StoreError

__all__ = ["create_app"]

PREFIX = "/api/v1"


def create_app(deps: ApiDeps) -> Starlette:
    messages = MessageApi(deps)
    hooks = ProviderHooks(deps, deps.hooked)
    document = openapi_document()

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes = [
        Route(f"{PREFIX}/messages", messages.send, methods=["POST"]),
        Route(f"{PREFIX}/messages", messages.list, methods=["GET"]),
        Route(f"{PREFIX}/messages/{{id}}", messages.get, methods=["GET"]),
        Route(f"{PREFIX}/messages/{{id}}", messages.delete, methods=["DELETE"]),
        *(
            Route(f"{PREFIX}/messages/{{id}}/{verb}", _action(messages, verb), methods=["POST"])
            for verb in ("retry", "hold", "release")
        ),
        Route(f"{PREFIX}/openapi.json", openapi, methods=["GET"]),
        Route(f"{PREFIX}/health", health, methods=["GET"]),
        Route("/hooks/{mailer}", hooks.receive, methods=["POST"]),
        readiness_route(deps.readiness),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={
            ApiError: api_error_response,
            HTTPException: http_exception,
            StoreError: store_error,
            Exception: internal_error,
        },
    )


def _action(messages: MessageApi, verb: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await messages.action(request, verb)

    return endpoint

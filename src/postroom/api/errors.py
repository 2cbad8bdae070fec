"""Errors as data: every non-2xx answer has one JSON shape, and no traceback leaves.

``{"error": {"status", "code", "message", "fields"?, "scope"?}}``; ``fields`` (each bad
field's path and what is wrong with it) for 422, and for a 403 that names what was
refused (the sender or an author header the API key may not use); ``scope`` (the one
the API key lacks) only for a 403 that names one. Handlers raise ``ApiError``; anything
else becomes a 500 ``internal`` whose details go to the log only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from postroom.errors import StoreError

__all__ = [
    "CODES",
    "ApiError",
    "api_error_response",
    "http_exception",
    "internal_error",
    "store_error",
]

_log = logging.getLogger("postroom.api")

RETRY_AFTER: Final = "60"  # seconds, when the store cannot serve

# HTTP status -> the stable error code clients switch on.
CODES: Final[Mapping[int, str]] = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
    507: "insufficient_storage",  # a recipient's mailbox is full
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        fields: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        scope: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = tuple(fields)
        self.headers = dict(headers or {})
        self.scope = scope

    @classmethod
    def invalid(cls, fields: Sequence[tuple[str, str]]) -> ApiError:
        names = ", ".join(dict.fromkeys(path for path, _ in fields))
        return cls(422, f"invalid request: {names}", fields=fields)

    def body(self) -> dict[str, object]:
        error: dict[str, object] = {
            "status": self.status,
            "code": CODES.get(self.status, "invalid_request"),
            "message": self.message,
        }
        if self.status == 422 or self.fields:
            error["fields"] = [{"field": f, "message": m} for f, m in self.fields]
        if self.scope is not None:
            error["scope"] = self.scope
        return {"error": error}

    def response(self) -> Response:
        return JSONResponse(self.body(), self.status, headers=self.headers)


async def api_error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no route) and 405 (wrong method), in our shape."""
    assert isinstance(exc, HTTPException)
    status = exc.status_code if exc.status_code in CODES else 500
    message = HTTPStatus(status).phrase.lower()
    if status == 405:
        allowed = sorted(m.strip() for m in (exc.headers or {}).get("Allow", "").split(","))
        return ApiError(405, message, headers={"Allow": ", ".join(allowed)}).response()
    return ApiError(status, message).response()


async def internal_error(request: Request, exc: Exception) -> Response:
    """Logged with what is known of the request (its API key, the queue id it names or
    created); the client learns nothing of it."""
    state = request.state
    _log.error(
        "API %s %s failed: key=%s queue_id=%s client=%s",
        request.method,
        request.url.path,
        getattr(state, "api_key", None) or "-",
        getattr(state, "queue_id", None) or request.path_params.get("id") or "-",
        request.client.host if request.client else "-",
        exc_info=exc,
    )
    return ApiError(500, "internal error").response()


async def store_error(request: Request, exc: Exception) -> Response:
    """The store is full, locked or closed: try again later."""
    assert isinstance(exc, StoreError)
    _log.warning("API %s %s: %s", request.method, request.url.path, exc)
    return ApiError(
        503, "the store cannot serve this now", headers={"Retry-After": RETRY_AFTER}
    ).response()

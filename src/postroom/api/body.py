"""Reading a request body within a size limit: 413 as soon as it is exceeded (by the
declared Content-Length or by the bytes that arrive), 422 when the client stops early."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

from postroom.api.errors import ApiError

__all__ = ["read_body"]


async def read_body(request: Request, limit: int, what: str = "the request") -> bytes:
    declared = request.headers.get("content-length")
    too_big = ApiError(413, f"{what} is larger than {limit} bytes")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks = bytearray()
    try:
        async for chunk in request.stream():
            chunks += chunk
            if len(chunks) > limit:
                raise too_big
    except ClientDisconnect:
        raise ApiError(422, "the request body ended early") from None
    return bytes(chunks)

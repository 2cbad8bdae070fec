"""``GET /readyz``: 200 when every part of the server works, 503 naming those that fail.

For load balancers and monitoring (no API key needed; it tells nothing about mail).
A failing part is a supervised task that keeps being restarted, the scheduler's store
writes that keep failing, or a store that SQLite reports damaged.
With ``delivery.paused`` the answer says ``"delivery": "paused"``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from postroom.api.routing import Endpoint
from postroom.readiness import Readiness

__all__ = ["readiness"]


def readiness(state: Readiness | None, *, delivery_paused: bool = False) -> Endpoint:
    """The ``/readyz`` endpoint over ``state`` (None: always ready). Paused delivery is
    no failure (mail is still accepted): it is named, ``"delivery": "paused"``, so a
    forgotten ``delivery.paused`` shows on monitoring."""
    paused: dict[str, object] = {"delivery": "paused"} if delivery_paused else {}

    async def readyz(request: Request) -> Response:
        problems = state.problems() if state is not None else []
        if not problems:
            return JSONResponse({"status": "ready", **paused})
        failing = [
            {"part": p.part, "reason": p.reason, "since": p.since, "failures": p.failures}
            for p in problems
        ]
        body = {"status": "failing", "failing": failing, **paused}
        return JSONResponse(body, status_code=503)

    return readyz

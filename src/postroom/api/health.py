"""``GET /readyz``: 200 when every part of the server works, 503 naming those that fail.

For load balancers and monitoring (no API key needed; it tells nothing about mail).
A failing part is a supervised task that keeps being restarted, the scheduler's store
writes that keep failing, or a store that SQLite reports damaged.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from postroom.api.routing import Endpoint
from postroom.api.schemas import FailingPart
from postroom.api.schemas import Readiness as Answer
from postroom.readiness import Readiness

__all__ = ["readiness"]


def readiness(state: Readiness | None) -> Endpoint:
    """The ``/readyz`` endpoint over ``state`` (None: always ready)."""

    async def readyz(request: Request) -> Response:
        problems = state.problems() if state is not None else []
        failing = [
            FailingPart(part=p.part, reason=p.reason, since=p.since, failures=p.failures)
            for p in problems
        ]
        answer = Answer(status="failing" if failing else "ready", failing=failing)
        body = answer.model_dump(exclude_defaults=not failing)
        return JSONResponse(body, status_code=503 if failing else 200)

    return readyz

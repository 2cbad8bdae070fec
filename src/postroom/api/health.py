"""``GET /readyz``: 200 when every part of the server works, 503 naming those that fail;
``GET /healthz``: 200 while the process answers at all; ``GET /metrics``: Prometheus.

For load balancers and monitoring (no API key needed; they tell counts, never mail).
A failing part is a supervised task that keeps being restarted, the scheduler's store
writes that keep failing, or a store that SQLite reports damaged.
With ``delivery.paused`` the answer says ``"delivery": "paused"``.
"""

from __future__ import annotations

from typing import Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from postroom.api.deps import ApiDeps
from postroom.api.errors import ApiError
from postroom.api.routing import Endpoint
from postroom.api.schemas import FailingPart
from postroom.api.schemas import Readiness as Answer
from postroom.events.metrics import CONTENT_TYPE
from postroom.readiness import Readiness

__all__ = ["healthz", "metrics", "readiness"]


def readiness(state: Readiness | None, *, delivery_paused: bool = False) -> Endpoint:
    """The ``/readyz`` endpoint over ``state`` (None: always ready). Paused delivery is
    no failure (mail is still accepted): it is named, ``"delivery": "paused"``, so a
    forgotten ``delivery.paused`` shows on monitoring."""
    delivery: Literal["paused"] | None = "paused" if delivery_paused else None

    async def readyz(request: Request) -> Response:
        problems = state.problems() if state is not None else []
        failing = [
            FailingPart(part=p.part, reason=p.reason, since=p.since, failures=p.failures)
            for p in problems
        ]
        answer = Answer(
            status="failing" if failing else "ready", failing=failing, delivery=delivery
        )
        body = answer.model_dump(exclude_defaults=True)  # no empty list, no null
        return JSONResponse(body, status_code=503 if failing else 200)

    return readyz


async def healthz(request: Request) -> Response:
    """Liveness: the process runs its event loop and answers (a restart is the cure
    when it does not). Whether its parts work is ``/readyz``'s question."""
    return JSONResponse({"status": "ok"})


def metrics(deps: ApiDeps) -> Endpoint:
    """``/metrics`` over ``deps.metrics`` (None: 404), with the queue and the webhook
    backlog read from the store, and the accept workers' counters asked, as it is
    scraped."""
    figures, store, sessions, workers = (
        deps.metrics,
        deps.store,
        deps.smtp_sessions,
        deps.worker_counts,
    )

    async def endpoint(request: Request) -> Response:
        if figures is None:
            raise ApiError(404, "metrics are served by the primary process only")
        body = figures.render(
            queue=await store.queue_summary(),
            backlog=await store.webhook_backlog(),
            sessions=sessions() if sessions is not None else {},
            now=deps.clock.time(),
            workers=await workers() if workers is not None else (),
        )
        return Response(body, media_type=CONTENT_TYPE)

    return endpoint

"""``POST /hooks/{mailer}``: a provider's delivery events for mail sent through its API.

No API key here: each provider proves itself with its own signature or the Basic
credentials configured on the hook (``delivery.webhooks`` checks them). Answers use the
API's error shape; a bad signature is ``401`` so the provider's dashboard shows it.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from postroom.api.body import ByteBudget, read_body
from postroom.api.deps import ApiDeps
from postroom.api.errors import RETRY_AFTER, ApiError
from postroom.delivery.webhooks.handle import HookedMailer, handle_webhook
from postroom.delivery.webhooks.sns import SnsCertificates

__all__ = ["MAX_HOOK_BODY", "ProviderHooks"]

MAX_HOOK_BODY = 8 * 1024 * 1024  # providers batch events; far below this in practice


class ProviderHooks:
    def __init__(
        self, deps: ApiDeps, hooked: Mapping[str, HookedMailer], budget: ByteBudget
    ) -> None:
        self._deps = deps
        self._budget = budget
        self._hooked = dict(hooked)
        self._certificates = SnsCertificates()  # fetched once per signing certificate

    async def receive(self, request: Request) -> Response:
        name = request.path_params["mailer"]
        mailer = self._hooked.get(name)
        if mailer is None:
            raise ApiError(404, f"no mailer named {name!r} takes webhooks")
        with self._budget.hold() as held:  # until the events are handled
            body = await read_body(request, MAX_HOOK_BODY, held, "a webhook body")
            status, answer = await handle_webhook(
                mailer,
                request.headers,
                body,
                self._deps.store,
                self._deps.clock,
                certificates=self._certificates,
            )
        if status < 400:
            return JSONResponse(answer, status)
        message = str(answer.get("error", "refused"))
        if status == 400:
            raise ApiError(422, message, fields=[("body", message)])
        headers = {"Retry-After": RETRY_AFTER} if status == 503 else None
        raise ApiError(status, message, headers=headers)

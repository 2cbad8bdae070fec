"""/api/v1/messages: send, get, list, retry, hold, release, delete.

A send goes through ``Intake.submit`` like any SMTP message (same policy, Received:,
log line and MessageQueued event), and is answered 202 only after the commit that holds
it is durable. Intake's refusals become HTTP answers through ``REFUSALS``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from postroom.api.body import read_body
from postroom.api.convert import compose_request, parse_send
from postroom.api.deps import ApiDeps, max_request_size
from postroom.api.errors import RETRY_AFTER, ApiError
from postroom.api.idempotency import HEADER, Idempotency, check_key, request_hash
from postroom.api.keys import Authenticator, RateLimiter
from postroom.api.schemas import MessageList, SendAccepted
from postroom.api.views import detail, header_meta, summary
from postroom.directory.apikeys import ApiKeys
from postroom.errors import StoreError
from postroom.intake import SenderRefusal
from postroom.intake.compose import ComposedMessage, ComposeError, compose, prepare_raw
from postroom.intake.principals import api_key_principal
from postroom.mail.envelope import Recipient, Source, SourceKind
from postroom.smtp.replies import Reply
from postroom.store.models import ApiKeyRecord, LogQuery, MessageMeta, RecipientStatus

__all__ = ["MessageApi"]

_log = logging.getLogger("postroom.api")
_INLINE_COMPOSE: Final = 64 * 1024  # bodies larger than this are composed in a thread

STATUS_FILTERS: Final = frozenset({*(s.value for s in RecipientStatus), "held"})

# Intake's refusals (SMTP reply code) -> HTTP status and the field the client should fix;
# a refused author field (SenderRefusal) names itself: "From", "Sender", "Resent-From" ...
REFUSALS: Final[Mapping[int, tuple[int, str | None]]] = {
    451: (503, None),  # local error: the store is unavailable
    452: (503, None),  # storage full
    550: (422, "to"),  # no such local user
    552: (413, None),  # over the size limit
    553: (403, "from"),  # sender not allowed for this key
}


def _json(model: Any, status: int = 200) -> Response:
    body = model.model_dump(by_alias=True, mode="json", exclude_none=False)
    return JSONResponse(body, status)


class MessageApi:
    def __init__(self, deps: ApiDeps) -> None:
        self.deps = deps
        limiter = RateLimiter(
            deps.clock, per_minute=deps.settings.rate_limit, burst=deps.settings.burst
        )
        self.authenticate = Authenticator(ApiKeys(deps.store, deps.clock), limiter)
        self.idempotency = Idempotency(deps.store, deps.clock)
        self.max_body = max_request_size(deps.max_message_size)

    # -- send --------------------------------------------------------------------------
    async def send(self, request: Request) -> Response:
        key = await self.authenticate(request)
        idempotency_key = check_key(request.headers.get(HEADER))
        body = await read_body(request, self.max_body)
        if idempotency_key is None:
            return await self._send(request, key, body, None)
        digest = request_hash(request.headers.get("content-type", ""), request.url.query, body)
        async with self.idempotency.serialized(key.name, idempotency_key):
            earlier = await self.idempotency.earlier(key.name, idempotency_key, digest)
            if earlier is not None:
                return Response(
                    earlier.body,
                    earlier.status,
                    media_type="application/json",
                    headers={"Idempotent-Replayed": "true"},
                )
            return await self._send(request, key, body, (idempotency_key, digest))

    async def _send(
        self,
        request: Request,
        key: ApiKeyRecord,
        body: bytes,
        idempotency: tuple[str, str] | None,
    ) -> Response:
        if len(body) > _INLINE_COMPOSE:
            # Base64 and MIME over megabytes is CPU work: keep the event loop free.
            composed, tags, metadata = await asyncio.to_thread(self._compose, request, body)
        else:
            composed, tags, metadata = self._compose(request, body)
        if len(composed.recipients) > self.deps.max_recipients:
            limit = self.deps.max_recipients
            raise ApiError.invalid([("to", f"too many recipients (at most {limit})")])
        client = request.client
        result = await self.deps.intake.submit(
            Source(
                kind=SourceKind.API,
                principal=key.name,
                client_ip=client.host if client else None,
                client_port=client.port if client else None,
                protocol="HTTP",
            ),
            composed.sender,
            [Recipient(address) for address in composed.recipients],
            composed.data,
            principal=api_key_principal(key),
            body_type=composed.body_type,
            smtputf8=composed.smtputf8,
        )
        if isinstance(result, Reply):
            raise _refusal(result)
        accepted = SendAccepted(
            id=result.queue_id,
            message_id=result.message_id or "",  # submitted mail always leaves with one
            recipients=[str(a) for a in composed.recipients],
        )
        response = _json(accepted, 202)
        meta = MessageMeta(result.queue_id, result.message_id, composed.subject, tags, metadata)
        answer = None
        if idempotency is not None:
            answer = self.idempotency.answer(key.name, *idempotency, 202, bytes(response.body))
        # The message is durable already; its meta and replay record follow in one commit.
        # If that commit fails the answer is still 202: a 503 would make the client send
        # the queued message again.
        try:
            await self.deps.store.save_send(
                meta, answer, forget_before=self.idempotency.forget_before()
            )
        except StoreError as exc:
            _log.warning(
                "message %s queued, but its tags and replay record were not: %s",
                result.queue_id,
                exc,
            )
        return response

    def _compose(
        self, request: Request, body: bytes
    ) -> tuple[ComposedMessage, tuple[str, ...], tuple[tuple[str, str], ...]]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        now = self.deps.clock.time()
        hostname = self.deps.hostname
        try:
            if content_type == "application/json":
                fields = parse_send(_parse_json(body))
                composed = compose(compose_request(fields), hostname=hostname, now=now)
                return composed, tuple(fields.tags), tuple(fields.metadata.items())
            if content_type == "message/rfc822":
                query = request.query_params
                composed = prepare_raw(
                    body,
                    mail_from=query.get("mail_from"),
                    rcpt=query.getlist("rcpt"),
                )
                return composed, (), ()
        except ComposeError as exc:
            raise ApiError.invalid(exc.problems) from None
        raise ApiError.invalid([("Content-Type", "must be application/json or message/rfc822")])

    # -- the log -----------------------------------------------------------------------
    async def get(self, request: Request) -> Response:
        await self.authenticate(request)
        queue_id = request.path_params["id"]
        return _json(await self._detail(queue_id))

    async def _detail(self, queue_id: str) -> Any:
        store = self.deps.store
        message = await store.message(queue_id)
        if message is None:
            raise ApiError(404, f"no message with id {queue_id!r}")
        meta = (await store.message_meta([queue_id])).get(queue_id)
        if meta is None:
            data = await store.read_body(queue_id)
            meta = header_meta(queue_id, data or b"")
        return detail(message, meta, await store.attempts(queue_id))

    async def list(self, request: Request) -> Response:
        await self.authenticate(request)
        query = _log_query(request.query_params)
        store = self.deps.store
        found = await store.query(query)
        more = len(found) > query.limit - 1
        page = found[: query.limit - 1]
        metas = await store.message_meta([m.id for m in page])
        answer = MessageList(
            messages=[summary(m, metas.get(m.id)) for m in page],
            next_cursor=page[-1].id if more and page else None,
        )
        return _json(answer)

    # -- queue actions -----------------------------------------------------------------
    async def action(self, request: Request, verb: str) -> Response:
        """retry, hold or release."""
        await self.authenticate(request)
        queue_id = request.path_params["id"]
        store = self.deps.store
        message = await store.message(queue_id)
        if message is None:
            raise ApiError(404, f"no message with id {queue_id!r}")
        if verb == "hold":
            await store.hold(queue_id)
        elif verb == "release":
            await store.release_hold(queue_id)
            self._wake()
        else:
            await self._retry(queue_id, held=message.held)
        return _json(await self._detail(queue_id))

    async def _retry(self, queue_id: str, *, held: bool) -> None:
        if held:
            raise ApiError(409, "the message is held; release it first")
        due = await self.deps.store.retry_now(queue_id, self.deps.clock.time())
        if due == 0:
            raise ApiError(409, "no recipient of the message is waiting for delivery")
        self._wake()

    async def delete(self, request: Request) -> Response:
        await self.authenticate(request)
        queue_id = request.path_params["id"]
        if not await self.deps.store.delete(queue_id):
            raise ApiError(404, f"no message with id {queue_id!r}")
        return Response(status_code=204)

    def _wake(self) -> None:
        if self.deps.queue_changed is not None:
            self.deps.queue_changed()


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to be a message
        raise ApiError.invalid([("body", "not a JSON document")]) from None


def _refusal(reply: Reply) -> ApiError:
    status, field = REFUSALS.get(reply.code, (503 if reply.is_transient else 422, None))
    if isinstance(reply, SenderRefusal):
        field = reply.field
    text = " ".join(reply.lines)
    if status == 503:
        return ApiError(503, f"cannot take mail now: {text}", headers={"Retry-After": RETRY_AFTER})
    if status == 422:
        return ApiError.invalid([(field or "body", text)])
    return ApiError(status, text, fields=[(field, text)] if field else ())


def _since(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError("not a finite number")
        return seconds
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("no time zone")
    return moment.timestamp()


def _log_query(params: Mapping[str, str]) -> LogQuery:
    problems: list[tuple[str, str]] = []
    known = {"status", "to", "from", "since", "limit", "cursor"}
    problems.extend((name, "unknown field") for name in params if name not in known)
    status = params.get("status")
    if status is not None and status not in STATUS_FILTERS:
        problems.append(("status", f"one of {', '.join(sorted(STATUS_FILTERS))}"))
    since = None
    if "since" in params:
        try:
            since = _since(params["since"])
        except ValueError:
            problems.append(("since", "an RFC 3339 time with zone, or Unix seconds"))
    limit = 50
    if "limit" in params:
        text = params["limit"]
        if not text.isdigit() or not 1 <= int(text) <= 500:
            problems.append(("limit", "an integer from 1 to 500"))
        else:
            limit = int(text)
    if problems:
        raise ApiError.invalid(problems)
    # One more than asked for tells whether there is a next page.
    return LogQuery(
        status, params.get("to"), params.get("from"), since, limit + 1, params.get("cursor")
    )

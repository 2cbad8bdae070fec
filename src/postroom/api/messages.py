"""/api/v1/messages: send, get, list, retry, hold, release, delete.

A send goes through ``Intake.submit`` like any SMTP message (same policy, Received:,
log line and MessageQueued event), and is answered 202 only after the commit that holds
it is durable. Intake's refusals become HTTP answers through ``REFUSALS``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from postroom.api.access import not_found, own_messages, require, sees
from postroom.api.body import ByteBudget, Held, SpooledRequest, read_body, spool_body
from postroom.api.convert import compose_request, least_size, parse_send, with_envelope
from postroom.api.deps import ApiDeps, max_request_size
from postroom.api.errors import RETRY_AFTER, ApiError
from postroom.api.idempotency import HEADER, Idempotency, check_key, request_hash
from postroom.api.keys import Authenticator, RateLimiter
from postroom.api.raw import raw_message
from postroom.api.schemas import RFC3339, UNIX_SECONDS, MessageList, SendAccepted
from postroom.api.views import detail, header_meta, summary
from postroom.directory.apikeys import ApiKeys, Scope
from postroom.errors import StoreError
from postroom.intake import FieldRefusal, Queued
from postroom.intake.compose import ComposedMessage, ComposeError, compose
from postroom.intake.principals import api_key_principal
from postroom.mail.envelope import Recipient, Source, SourceKind
from postroom.mail.spool import SpooledBody
from postroom.smtp.replies import Reply
from postroom.store.models import (
    ApiKeyRecord,
    IdempotencyRecord,
    LogQuery,
    RecipientStatus,
    StoredMessage,
)

__all__ = ["MessageApi"]

_log = logging.getLogger("postroom.api")
_INLINE_COMPOSE: Final = 64 * 1024  # bodies larger than this are composed in a thread
_JSON: Final = "application/json"
# A JSON send holds its body, the parsed document, the decoded attachments and the MIME
# message at once: it counts this many times its size against the in-flight budget.
_JSON_COPIES: Final = 4
_RAW: Final = "message/rfc822"

# A message ready for intake: envelope and facts, its bytes, tags, metadata.
Prepared = tuple[ComposedMessage, bytes | SpooledBody, tuple[str, ...], tuple[tuple[str, str], ...]]

STATUS_FILTERS: Final = frozenset({*(s.value for s in RecipientStatus), "held"})

# Intake's refusals (SMTP reply code) -> HTTP status and the field the client should fix;
# a refused author field (SenderRefusal) names itself: "From", "Sender", "Resent-From" ...
REFUSALS: Final[Mapping[int | str, tuple[int, str | None]]] = {
    451: (503, None),  # local error: the store is unavailable
    452: (503, None),  # storage full
    550: (422, "to"),  # no such local user
    552: (413, None),  # over the size limit
    "5.2.2": (507, "to"),  # a recipient's mailbox is full (552 5.2.2): not the request's size
    553: (403, "from"),  # sender not allowed for this key
}


def _json(model: Any, status: int = 200) -> Response:
    body = model.model_dump(by_alias=True, mode="json", exclude_none=False)
    return JSONResponse(body, status)


class MessageApi:
    def __init__(self, deps: ApiDeps, budget: ByteBudget) -> None:
        self.deps = deps
        limiter = RateLimiter(
            deps.store, deps.clock, per_minute=deps.settings.rate_limit, burst=deps.settings.burst
        )
        self.authenticate = Authenticator(ApiKeys(deps.store, deps.clock), limiter)
        self.idempotency = Idempotency(deps.store, deps.clock)
        self.max_body = max_request_size(deps.max_message_size)
        self.budget = budget

    # -- send --------------------------------------------------------------------------
    async def send(self, request: Request) -> Response:
        key = await self.authenticate(request)
        require(key, Scope.SEND)
        idempotency_key = check_key(request.headers.get(HEADER))
        kind = _content_type(request)
        with self.budget.hold() as held:
            body = await self._receive(request, kind, held)
            try:
                return await self._send_once(request, key, kind, body, idempotency_key)
            finally:
                if isinstance(body, SpooledRequest):
                    body.body.close()

    async def _receive(
        self, request: Request, kind: str, held: Held
    ) -> JsonRequest | SpooledRequest:
        """A JSON body whole and parsed, within the budget; a raw message to the spool."""
        if kind == _JSON:
            data = await read_body(request, self.max_body, held, weight=_JSON_COPIES)
            if len(data) > _INLINE_COMPOSE:
                document = await asyncio.to_thread(_parse_json, data)
            else:
                document = _parse_json(data)
            return JsonRequest(document, _sha256(data), len(data))
        intake = self.deps.intake
        spool = SpooledBody(intake.spool_dir, intake.spool_memory)
        try:
            return await spool_body(request, self.deps.max_message_size, spool)
        except BaseException:
            spool.close()
            raise

    async def _send_once(
        self,
        request: Request,
        key: ApiKeyRecord,
        kind: str,
        body: JsonRequest | SpooledRequest,
        idempotency_key: str | None,
    ) -> Response:
        """The send, or with an Idempotency-Key the first answer again."""
        if idempotency_key is None:
            return await self._send(request, key, body, None)
        digest = request_hash(kind, request.url.query, body.digest)
        async with self.idempotency.serialized(key.name, idempotency_key):
            earlier = await self.idempotency.earlier(key.name, idempotency_key, digest)
            if earlier is not None:
                await self._still_there(earlier, idempotency_key)
                return Response(
                    earlier.body,
                    earlier.status,
                    media_type="application/json",
                    headers={"Idempotent-Replayed": "true"},
                )
            return await self._send(request, key, body, (idempotency_key, digest))

    async def _still_there(self, earlier: IdempotencyRecord, idempotency_key: str) -> None:
        """A replayed 202 names a message; once deleted, say so rather than name an id
        that answers 404 (and do not send it again: it was sent)."""
        queue_id = json.loads(earlier.body).get("id")
        if queue_id is not None and await self.deps.store.message(queue_id) is None:
            raise ApiError(
                409, f"{HEADER} {idempotency_key!r} sent message {queue_id}, since deleted"
            )

    async def _send(
        self,
        request: Request,
        key: ApiKeyRecord,
        body: JsonRequest | SpooledRequest,
        idempotency: tuple[str, str] | None,
    ) -> Response:
        # Base64, MIME and file copies over megabytes: off the event loop.
        size = body.body.size if isinstance(body, SpooledRequest) else body.size
        if size > _INLINE_COMPOSE:
            prepared = await asyncio.to_thread(self._prepare, request, body)
        else:
            prepared = self._prepare(request, body)
        composed, data, tags, metadata = prepared
        try:
            result = await self._submit(request, key, composed, data, (tags, metadata))
        finally:
            if isinstance(data, SpooledBody):
                data.close()
        accepted = SendAccepted(
            id=result.queue_id,
            message_id=result.message_id or "",  # submitted mail always leaves with one
            recipients=[str(a) for a in composed.recipients],
        )
        response = _json(accepted, 202)
        meta = result.meta  # as intake stored it: the fields' tags and the header's
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

    async def _submit(
        self,
        request: Request,
        key: ApiKeyRecord,
        composed: ComposedMessage,
        data: bytes | SpooledBody,
        labels: tuple[tuple[str, ...], tuple[tuple[str, str], ...]],
    ) -> Queued:
        """Through intake: the message queued (with its tags and metadata: ``labels``),
        or ApiError for a refusal."""
        tags, metadata = labels
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
            data,
            principal=api_key_principal(key),
            body_type=composed.body_type,
            smtputf8=composed.smtputf8,
            tags=tags,
            metadata=metadata,
        )
        if isinstance(result, Reply):
            raise _refusal(result)
        request.state.queue_id = result.queue_id  # for the log, should the request fail later
        return result

    def _prepare(self, request: Request, body: JsonRequest | SpooledRequest) -> Prepared:
        """The message from the request: its envelope and facts, its bytes, its tags and
        metadata; ApiError 422 naming each field that cannot be used."""
        now = self.deps.clock.time()
        hostname = self.deps.hostname
        query = request.query_params
        mail_from, rcpt = query.get("mail_from"), query.getlist("rcpt")
        try:
            if isinstance(body, SpooledRequest):
                composed = raw_message(body, mail_from=mail_from, rcpt=rcpt)
                return composed, body.body, (), ()
            fields = parse_send(body.take())
            limit = self.deps.max_message_size
            if least_size(fields) > limit:
                raise ApiError(413, f"the message would be larger than {limit} bytes")
            tags, metadata = tuple(fields.tags), tuple(fields.metadata.items())
            fields_out = compose_request(fields)
            del fields  # the base64 text: only the decoded bytes are needed from here
            composed = compose(fields_out, hostname=hostname, now=now)
            del fields_out
            composed = with_envelope(composed, mail_from, rcpt)
            return composed, composed.data, tags, metadata
        except ComposeError as exc:
            raise ApiError.invalid(exc.problems) from None

    # -- the log -----------------------------------------------------------------------
    async def get(self, request: Request) -> Response:
        key = await self.authenticate(request)
        require(key, Scope.READ, Scope.READ_ALL)
        message = await self.visible(key, request.path_params["id"])
        return _json(await self._detail(message))

    async def visible(self, key: ApiKeyRecord, queue_id: str) -> StoredMessage:
        """The message, if it exists and the key may see it; else 404 (never 403)."""
        message = await self.deps.store.message(queue_id)
        if message is None or not sees(key, message):
            raise not_found(queue_id)
        return message

    async def _detail(self, message: StoredMessage) -> Any:
        store = self.deps.store
        queue_id = message.id
        meta = (await store.message_meta([queue_id])).get(queue_id)
        if meta is None or meta.subject is None:  # not sent through the API: read the header
            data = await store.read_body(queue_id)
            read = header_meta(queue_id, data or b"")
            meta = read if meta is None else dataclasses.replace(meta, subject=read.subject)
        return detail(message, meta, await store.attempts(queue_id))

    async def list(self, request: Request) -> Response:
        key = await self.authenticate(request)
        require(key, Scope.READ, Scope.READ_ALL)
        query = own_messages(key, _log_query(request.query_params))
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
        key = await self.authenticate(request)
        require(key, Scope.QUEUE)
        message = await self.visible(key, request.path_params["id"])
        queue_id = message.id
        store = self.deps.store
        if verb == "hold":
            await store.hold(queue_id)
        elif verb == "release":
            await store.release_hold(queue_id)
            self._wake()
        else:
            await self._retry(queue_id, held=message.held)
        now = await store.message(queue_id)
        if now is None:  # deleted meanwhile
            raise not_found(queue_id)
        return _json(await self._detail(now))

    async def _retry(self, queue_id: str, *, held: bool) -> None:
        if held:
            raise ApiError(409, "the message is held; release it first")
        due = await self.deps.store.retry_now(queue_id, self.deps.clock.time())
        if due == 0:
            raise ApiError(409, "no recipient of the message is waiting for delivery")
        self._wake()

    async def delete(self, request: Request) -> Response:
        key = await self.authenticate(request)
        require(key, Scope.QUEUE)
        queue_id = (await self.visible(key, request.path_params["id"])).id
        if not await self.deps.store.delete(queue_id):
            raise not_found(queue_id)
        return Response(status_code=204)

    def _wake(self) -> None:
        if self.deps.queue_changed is not None:
            self.deps.queue_changed()


class JsonRequest:
    """A JSON send's parsed document, handed over once (then let go, to free memory)."""

    def __init__(self, document: Any, digest: str, size: int) -> None:
        self._document = document
        self.digest = digest  # SHA-256 of the body as sent
        self.size = size

    def take(self) -> Any:
        document, self._document = self._document, None
        return document


def _content_type(request: Request) -> str:
    """The send's form, known before a byte of the body is read."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in (_JSON, _RAW):
        raise ApiError.invalid([("Content-Type", f"must be {_JSON} or {_RAW}")])
    return kind


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to be a message
        raise ApiError.invalid([("body", "not a JSON document")]) from None


def _refusal(reply: Reply) -> ApiError:
    default = (503 if reply.is_transient else 422, None)
    status, field = REFUSALS.get(reply.enhanced or "", REFUSALS.get(reply.code, default))
    if isinstance(reply, FieldRefusal):
        field = reply.field
    text = " ".join(reply.lines)
    if status == 503:
        return ApiError(503, f"cannot take mail now: {text}", headers={"Retry-After": RETRY_AFTER})
    if status == 422:
        return ApiError.invalid([(field or "body", text)])
    return ApiError(status, text, fields=[(field, text)] if field else ())


def _since(text: str) -> float:
    """Unix seconds, or an RFC 3339 date-time (section 5.6), as the document states."""
    if re.fullmatch(UNIX_SECONDS, text):
        return float(text)
    if not re.fullmatch(RFC3339, text):
        raise ValueError("neither Unix seconds nor an RFC 3339 date-time")
    text = text.upper().replace("Z", "+00:00")
    if text[17:19] == "60":  # a leap second (RFC 3339 5.7): Python has none
        text = f"{text[:17]}59{text[19:]}"
    return datetime.fromisoformat(text).timestamp()


def _log_query(params: Mapping[str, str]) -> LogQuery:
    problems: list[tuple[str, str]] = []
    known = {"status", "to", "from", "since", "limit", "cursor", "mailer"}
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
        if not re.fullmatch("[0-9]{1,3}", text) or not 1 <= int(text) <= 500:
            problems.append(("limit", "an integer from 1 to 500"))
        else:
            limit = int(text)
    if problems:
        raise ApiError.invalid(problems)
    # One more than asked for tells whether there is a next page.
    return LogQuery(
        status,
        params.get("to"),
        params.get("from"),
        since,
        limit + 1,
        params.get("cursor"),
        mailer=params.get("mailer") or None,
    )

"""The dashboard's read-only pages: overview, email log, message, queue, mailers and
routes, domains, users and API keys, the audit log. Each reads through the store's
parts and the same services the CLI uses; none writes."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import replace

from starlette.responses import Response

from postroom.dashboard.chart import COLOURS, bar_chart, totals_by
from postroom.dashboard.format import parse_local_input, utc
from postroom.dashboard.mime import HEAD_SIZE, read_message, subject_of
from postroom.dashboard.web import Visit, Web
from postroom.delivery.message import OutboundMessage
from postroom.delivery.outcome_events import relay_names
from postroom.delivery.router import Explanation, RouteTable
from postroom.delivery.rules import MessageView
from postroom.errors import PostroomError
from postroom.ids import queue_id_floor, queue_id_time
from postroom.mail.address import parse_address
from postroom.mailauth.dkim import KeyRing, zone_line
from postroom.mailauth.dkimsummary import signature_summary
from postroom.mailauth.doctor import DomainCheck, check_domain
from postroom.store.models import (
    LogQuery,
    RecipientState,
    RecipientStatus,
    StoredMessage,
)
from postroom.store.rows import HELD

__all__ = ["SEARCH_WINDOW", "STATUSES", "Pages"]

PAGE_SIZE = 50
# Messages a page of a filtered search reads, newest first, when no index answers it
# (a filter on status, sender, mailer, subject or tag): a page always answers quickly,
# and its "older messages" link reads the next ones.
SEARCH_WINDOW = 50_000
STATUSES = (*(s.value for s in RecipientStatus), HELD)
_DAY = 86400.0
_EXPLAINED = 5  # waiting recipients whose route under today's routes the message page explains
_WAITING = (RecipientStatus.QUEUED, RecipientStatus.DEFERRED)
_HOOKS = 200  # webhook deliveries the message page lists
_DSNS = 50  # DSNs the message page lists (one per failure, delay warning, success)
_SMTP = ("mx", "smtp")  # mailers that send the stored bytes as they are
# The overview's windows: name -> (slot, window) in seconds.
_SPANS = {
    "hour": (300.0, 3600.0),
    "day": (3600.0, _DAY),
    "week": (21600.0, 7 * _DAY),
}


class Pages:
    def __init__(self, web: Web) -> None:
        self.web = web
        self.store = web.deps.store

    async def overview(self, visit: Visit) -> Response:
        now = self.web.deps.clock.time()
        span = visit.request.query_params.get("span", "day")
        if span not in _SPANS:
            span = "day"
        bucket, window = _SPANS[span]
        relays = relay_names(self.web.deps.settings.mailers)
        counts = [
            replace(row, disposition="sent")
            if row.disposition == "delivered" and row.mailer in relays
            else row
            for row in await self.store.attempt_counts(now - window, bucket)
        ]  # a relay's or a provider's success is "sent", as the event catalogue has it
        counts += await self.store.complaint_counts(now - window, bucket)
        return self.web.render(
            "overview.html",
            visit,
            title="Overview",
            summary=await self.store.queue_summary(),
            health=await self.store.mailer_health(now - _DAY),
            failures=await self.store.recent_failures(10),
            span=span,
            chart=bar_chart(counts, now - window, now, bucket),
            by_mailer=totals_by(counts, lambda row: row.mailer),
            by_domain=totals_by(counts, lambda row: row.sender_domain or "<>"),
            outcomes=list(COLOURS),
            now=now,
        )

    async def log(self, visit: Visit) -> Response:
        params = visit.request.query_params
        queue_id = params.get("id", "").strip()
        if queue_id:
            if await self.store.message(queue_id) is not None:
                return self.web.redirect(f"/messages/{queue_id}")
            return self.web.render(
                "log.html", visit, 404, title="Email log", messages=[], subjects={},
                filters=dict(params), statuses=STATUSES, next_cursor=None,
                mailers=self._mailer_names(), notice=f"No message with id {queue_id}.",
            )  # fmt: skip
        status = params.get("status") or None
        query = LogQuery(
            status=status if status in STATUSES else None,
            to=params.get("to") or None,
            sender=params.get("sender") or None,
            since=parse_local_input(params.get("since", "")),
            until=parse_local_input(params.get("until", "")),
            mailer=params.get("mailer") or None,
            subject=params.get("subject") or None,
            tag=params.get("tag") or None,
            cursor=params.get("after") or None,
            limit=PAGE_SIZE + 1,
        )
        floor = await self._search_floor(query)
        found = await self.store.query(replace(query, floor=floor))
        more = len(found) > PAGE_SIZE
        found = found[:PAGE_SIZE]
        notice = ""
        if not more and floor is not None:
            notice = (
                f"Searched the {SEARCH_WINDOW:,} messages back to"
                f" {utc(queue_id_time(floor))}; Older messages searches further back."
            )
        return self.web.render(
            "log.html",
            visit,
            title="Email log",
            messages=found,
            subjects=await self._subjects(found),
            filters={k: v for k, v in params.items() if k != "after"},
            statuses=STATUSES,
            mailers=self._mailer_names(),
            next_cursor=found[-1].id if more else floor,
            notice=notice,
        )

    async def _search_floor(self, query: LogQuery) -> str | None:
        """Where a page of a filtered search stops reading, when it must read messages one
        by one (only a recipient search has indexes of its own): SEARCH_WINDOW messages
        below the cursor (or the end of the time range). None: no bound."""
        if query.to is not None or not any(
            (query.status, query.sender, query.mailer, query.subject, query.tag)
        ):
            return None
        start = query.cursor
        if query.until is not None:
            end = queue_id_floor(query.until + 1)
            start = end if start is None else min(start, end)
        return await self.store.newest_before(start, SEARCH_WINDOW)

    async def message(self, visit: Visit) -> Response:
        queue_id = visit.request.path_params["id"]
        message = await self.store.message(queue_id)
        if message is None:
            return self.web.refused(visit, 404, f"No message with id {queue_id}.")
        data = await self.store.read_body(queue_id)
        shown = read_message(data) if data is not None else None
        meta = (await self.store.message_meta([queue_id])).get(queue_id)
        attempts = await self.store.attempts(queue_id)
        return self.web.render(
            "message.html",
            visit,
            title=f"Message {queue_id}",
            message=message,
            meta=meta,
            shown=shown,
            explained=await self._routes(message.sender, message.recipients, data or b""),
            attempts=attempts,
            dsns=await self._dsns_of(message),
            original=await self._original(message),
            # The bytes every SMTP attempt sent (signed once, at intake): their DKIM
            # signatures, as the delivery log line gives them.
            dkim=signature_summary(data) if data is not None else None,
            smtp_mailers={m.name for m in self.web.deps.settings.mailers if m.type in _SMTP},
            events=await self.store.provider_events(queue_id),
            webhooks=await self.store.webhook_deliveries(queue_id=queue_id, limit=_HOOKS),
            remote=visit.request.query_params.get("remote") == "1",
            notice=visit.request.query_params.get("notice", ""),
        )

    async def _dsns_of(self, message: StoredMessage) -> list[StoredMessage]:
        """The DSNs postroom queued about ``message`` (each stores its original's id),
        oldest first."""
        found = await self.store.query(LogQuery(dsn_of=message.id, limit=_DSNS))
        return sorted(found, key=lambda m: m.received_at)

    async def queue(self, visit: Visit) -> Response:
        status = visit.request.query_params.get("status", "deferred")
        if status not in (RecipientStatus.QUEUED.value, RecipientStatus.DEFERRED.value, HELD):
            status = RecipientStatus.DEFERRED.value
        after = visit.request.query_params.get("after") or None
        found = await self.store.query(LogQuery(status=status, cursor=after, limit=PAGE_SIZE + 1))
        more = len(found) > PAGE_SIZE
        return self.web.render(
            "queue.html",
            visit,
            title="Queue",
            summary=await self.store.queue_summary(),
            state=status,
            messages=found[:PAGE_SIZE],
            subjects=await self._subjects(found[:PAGE_SIZE]),
            next_cursor=found[PAGE_SIZE - 1].id if more else None,
            notice=visit.request.query_params.get("notice", ""),
        )

    async def captured(self, visit: Visit) -> Response:
        """What the capture mailers kept, newest first (keyset pages, as the log)."""
        names = [m.name for m in self.web.deps.settings.mailers if m.type == "capture"]
        params = visit.request.query_params
        name = params.get("mailer") if params.get("mailer") in names else None
        name = name or (names[0] if names else None)
        found = []
        if name is not None:
            after = params.get("after") or None
            found = await self.store.query(LogQuery(mailer=name, cursor=after, limit=PAGE_SIZE + 1))
        more = len(found) > PAGE_SIZE
        found = found[:PAGE_SIZE]
        return self.web.render(
            "captured.html",
            visit,
            title="Captured mail",
            names=names,
            mailer=name,
            messages=found,
            subjects=await self._subjects(found),
            next_cursor=found[-1].id if more else None,
        )

    async def mailers(self, visit: Visit) -> Response:
        settings = self.web.deps.settings
        now = self.web.deps.clock.time()
        health = {h.mailer: h for h in await self.store.mailer_health(now - _DAY)}
        params = visit.request.query_params
        explained, problem = None, ""
        if params.get("to"):
            try:
                explained = await self._explain(params.get("sender", ""), params["to"])
            except (PostroomError, ValueError) as exc:
                problem = str(exc)
        return self.web.render(
            "mailers.html",
            visit,
            title="Mailers and routes",
            mailers=settings.mailers,
            routes=settings.routes,
            health=health,
            usage=await self.web.deps.limit_usage(),
            explained=explained,
            problem=problem,
            form=dict(params),
        )

    async def _explain(self, sender: str, recipient: str, data: bytes = b"") -> Explanation:
        """``postroom route explain``'s answer for one recipient (delivery.router)."""
        address = str(parse_address(recipient))
        message = OutboundMessage(id="explain", sender=sender, data=data, principal=None)
        table = RouteTable.from_settings(self.web.deps.settings, await self.store.domains())
        return table.explain(MessageView(message, address))

    async def _original(self, message: StoredMessage) -> StoredMessage | str | None:
        """The message a DSN reports on; its id alone when it is gone (retention)."""
        if message.dsn_of is None:
            return None
        return await self.store.message(message.dsn_of) or message.dsn_of

    async def _routes(
        self, sender: str, recipients: Sequence[RecipientState], data: bytes
    ) -> list[Explanation]:
        """The route each of the first few recipients still waiting would take under
        today's routes (the routes of attempts made are recorded with them)."""
        found: list[Explanation] = []
        waiting = [r for r in recipients if r.status in _WAITING]
        for recipient in waiting[:_EXPLAINED]:
            with contextlib.suppress(PostroomError, ValueError):
                found.append(await self._explain(sender, recipient.address, data))
        return found

    async def domains(self, visit: Visit) -> Response:
        keys = KeyRing(self.web.deps.settings.data_dir)
        local = await self.store.domains()
        names = sorted({*local, *keys.domains()})
        checked = visit.request.query_params.get("check", "")
        report, problem = None, ""
        if checked in names:
            try:
                setup = DomainCheck.for_settings(self.web.deps.settings, self.web.deps.clock.time())
                report = await check_domain(checked, setup)
            except PostroomError as exc:
                problem = str(exc)
        return self.web.render(
            "domains.html",
            visit,
            title="Domains",
            domains=[
                (name, name in local, [(k, zone_line(k)) for k in keys.keys(name)])
                for name in names
            ],
            notice=visit.request.query_params.get("notice", ""),
            checked=checked,
            report=report,
            problem=problem,
        )

    async def keys(self, visit: Visit, *, created: str = "", name: str = "") -> Response:
        return self.web.render(
            "keys.html",
            visit,
            title="Users and API keys",
            users=await self.store.users(),
            keys=await self.store.api_keys(),
            created=created,
            created_name=name,
            notice=visit.request.query_params.get("notice", ""),
        )

    async def audit(self, visit: Visit) -> Response:
        before = visit.request.query_params.get("before")
        try:
            cursor = float(before) if before else None
        except ValueError:
            cursor = None
        actions = await self.store.admin_actions(limit=PAGE_SIZE, before=cursor)
        return self.web.render(
            "audit.html",
            visit,
            title="Audit log",
            actions=actions,
            next_before=actions[-1].at if len(actions) == PAGE_SIZE else None,
        )

    async def _subjects(self, messages: Sequence[StoredMessage]) -> dict[str, str]:
        """Each message's Subject: as the API recorded it, else from its stored header
        block (only the first bytes of each message are read)."""
        ids = [m.id for m in messages]
        subjects = {i: m.subject for i, m in (await self.store.message_meta(ids)).items()}
        unknown = [i for i in ids if not subjects.get(i)]
        heads = await self.store.read_heads(unknown, HEAD_SIZE)
        return {i: subjects.get(i) or subject_of(heads.get(i, b"")) for i in ids}

    def _mailer_names(self) -> list[str]:
        return [m.name for m in self.web.deps.settings.mailers]

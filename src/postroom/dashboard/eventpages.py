"""The suppression list and the outgoing webhooks in the dashboard.

Both go through what ``postroom suppression`` / ``postroom webhook`` and the API use: the
``Suppressions`` service (addresses and scopes normalised, the store's keyset listing),
the store's webhook backlog and delivery history, and ``send_test_event`` for a test
request. The pages only translate forms into those calls and their answers into HTML.
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.responses import Response

from postroom.dashboard.web import Visit, Web
from postroom.directory.suppressions import Suppressions
from postroom.errors import ConfigError, PostroomError
from postroom.events.dispatcher import send_test_event
from postroom.store.models import SuppressionReason, WebhookState

__all__ = ["EventPages"]

PAGE_SIZE = 50
_HISTORY = 50


class EventPages:
    def __init__(self, web: Web) -> None:
        self.web = web
        self.store = web.deps.store
        self.suppressions = Suppressions(self.store, web.deps.clock)

    # -- the suppression list -----------------------------------------------------------
    async def suppression_list(self, visit: Visit) -> Response:
        """Entries by address, a page at a time (keyset: after the last address and scope
        shown); searched by address, by sender domain, or the global entries only."""
        params = visit.request.query_params
        address = params.get("address", "").strip()
        scope = params.get("scope", "").strip()
        only_global = params.get("global") == "1"
        after_address, after_scope = params.get("after", ""), params.get("after_scope", "")
        after = (after_address, after_scope) if after_address else None
        notice = params.get("notice", "")
        entries = []
        try:
            entries = await self.suppressions.list(
                scope="" if only_global else (scope or None),
                address=address or None,
                limit=PAGE_SIZE + 1,
                after=after,
            )
        except PostroomError as exc:
            notice = str(exc)
        page, more = entries[:PAGE_SIZE], len(entries) > PAGE_SIZE
        next_query = ""
        if more:
            last = page[-1]
            kept = {"address": address, "scope": scope, "global": "1" if only_global else ""}
            next_query = urlencode(
                {
                    **{k: v for k, v in kept.items() if v},
                    "after": last.address,
                    "after_scope": last.scope,
                }
            )
        return self.web.render(
            "suppressions.html",
            visit,
            title="Suppression list",
            entries=page,
            filters={"address": address, "scope": scope, "global": only_global},
            reasons=[r.value for r in SuppressionReason],
            next_query=next_query,
            notice=notice,
        )

    async def suppress(self, visit: Visit) -> Response:
        form = visit.form
        try:
            entry, added = await self.suppressions.add(
                form.get("address"),
                scope=form.get("scope") or None,
                reason=SuppressionReason(form.get("reason", SuppressionReason.MANUAL.value)),
                source=f"dashboard {visit.admin}",
                detail=form.get("detail"),
            )
        except ValueError:
            return self.web.redirect("/suppressions", "not added: unknown reason")
        except PostroomError as exc:
            return self.web.redirect("/suppressions", f"not added: {exc}")
        place = f"for {entry.scope}" if entry.scope else "globally"
        if added:
            await self.web.audit(visit, "suppression add", f"{entry.address} {place}")
        state = "suppressed" if added else "was suppressed already"
        return self.web.redirect("/suppressions", f"{entry.address} {state} {place}")

    async def unsuppress(self, visit: Visit) -> Response:
        try:
            entry = await self.suppressions.remove(
                visit.form.get("address"), scope=visit.form.get("scope") or None
            )
        except PostroomError as exc:
            return self.web.redirect("/suppressions", f"not removed: {exc}")
        place = f"for {entry.scope}" if entry.scope else "globally"
        await self.web.audit(visit, "suppression remove", f"{entry.address} {place}")
        return self.web.redirect(
            "/suppressions", f"{entry.address} is no longer suppressed {place}"
        )

    # -- outgoing webhooks --------------------------------------------------------------
    async def webhooks(self, visit: Visit) -> Response:
        """Each configured webhook with what waits for it and its latest failure; the
        delivery history, newest first, of one webhook or all, one state or all."""
        params = visit.request.query_params
        targets = self.web.deps.settings.webhooks
        chosen = params.get("webhook", "")
        state_text = params.get("state", "")
        state = next((s for s in WebhookState if s.value == state_text), None)
        backlog = await self.store.webhook_backlog()
        last_failure = {}
        for target in targets:
            failed = await self.store.webhook_deliveries(
                webhook=target.name, state=WebhookState.FAILED, limit=1
            )
            last_failure[target.name] = failed[0] if failed else None
        history = await self.store.webhook_deliveries(
            webhook=chosen or None, state=state, limit=_HISTORY
        )
        return self.web.render(
            "webhooks.html",
            visit,
            title="Webhooks",
            targets=targets,
            backlog=backlog,
            last_failure=last_failure,
            history=history,
            filters={"webhook": chosen, "state": state_text},
            states=[s.value for s in WebhookState],
            notice=params.get("notice", ""),
        )

    async def test_webhook(self, visit: Visit) -> Response:
        """A signed test event POSTed now, outside the outbox; what it answered."""
        name = visit.form.get("name")
        target = next((t for t in self.web.deps.settings.webhooks if t.name == name), None)
        if target is None:
            return self.web.redirect("/webhooks", f"no webhook named {name!r}")
        await self.web.audit(visit, "webhook test", name)
        try:
            result = await send_test_event(
                target, self.web.deps.clock, environ=self.web.deps.environ
            )
        except ConfigError as exc:
            return self.web.redirect("/webhooks", f"webhook {name}: {exc}")
        if result.error is not None:
            return self.web.redirect("/webhooks", f"webhook {name} test failed: {result.error}")
        return self.web.redirect(
            "/webhooks", f"webhook {name} answered {result.status} to test event {result.event.id}"
        )

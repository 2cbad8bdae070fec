"""What an admin changes from the dashboard: queue actions on one message or many, DKIM
keys, API keys. Each is the store's or the directory's own operation (the ones the CLI
and the API call), answered with a redirect (POST/redirect/GET) and logged in the audit
log with the admin's name."""

from __future__ import annotations

from starlette.responses import Response

from postroom.dashboard.pages import Pages
from postroom.dashboard.web import Visit, Web
from postroom.directory.apikeys import ApiKeys, parse_scopes
from postroom.errors import PostroomError
from postroom.intake.principals import admin_principal
from postroom.intake.submission import Queued
from postroom.mail.address import parse_address
from postroom.mail.envelope import Recipient, Source, SourceKind
from postroom.mailauth.dkim import KeyRing

__all__ = ["QUEUE_VERBS", "Actions"]

QUEUE_VERBS = ("retry", "hold", "release", "delete")


class Actions:
    def __init__(self, web: Web, pages: Pages) -> None:
        self.web = web
        self.pages = pages
        self.store = web.deps.store

    async def _apply(self, verb: str, queue_id: str) -> bool:
        """One queue action; False when it changed nothing (unknown id, nothing due)."""
        store, deps = self.store, self.web.deps
        if verb == "hold":
            return await store.hold(queue_id)
        if verb == "release":
            done = await store.release_hold(queue_id)
        elif verb == "retry":
            done = await store.retry_now(queue_id, deps.clock.time()) > 0
        else:
            return await store.delete(queue_id)
        if done and deps.queue_changed is not None:
            deps.queue_changed()
        return done

    async def message(self, visit: Visit) -> Response:
        verb, queue_id = visit.request.path_params["verb"], visit.request.path_params["id"]
        if verb == "resend":
            return await self.resend(visit)
        if verb not in QUEUE_VERBS:
            return self.web.refused(visit, 404, f"No action {verb}.")
        done = await self._apply(verb, queue_id)
        await self.web.audit(visit, verb, queue_id)
        if verb == "delete" and done:
            return self.web.redirect("/log", f"deleted {queue_id}")
        outcome = "done" if done else "nothing to do"
        return self.web.redirect(f"/messages/{queue_id}", f"{verb}: {outcome}")

    async def resend(self, visit: Visit) -> Response:
        """The stored message again, to the same recipients, as a new message through
        intake (the one gate), submitted by the admin."""
        queue_id = visit.request.path_params["id"]
        store, deps = self.store, self.web.deps
        message = await store.message(queue_id)
        data = await store.read_body(queue_id) if message is not None else None
        if message is None or data is None:
            return self.web.refused(visit, 404, "The message or its body is not kept.")
        result = await deps.intake.submit(
            Source(kind=SourceKind.SENDMAIL, principal=visit.admin, protocol="HTTP"),
            parse_address(message.sender) if message.sender else None,
            [Recipient(parse_address(r.address)) for r in message.recipients],
            data,
            principal=admin_principal(visit.admin),
            body_type=message.body_type,
            smtputf8=message.smtputf8,
        )
        if not isinstance(result, Queued):
            text = " ".join(result.lines)
            return self.web.redirect(f"/messages/{queue_id}", f"resend refused: {text}")
        if deps.queue_changed is not None:
            deps.queue_changed()
        await self.web.audit(visit, "resend", f"{queue_id} as {result.queue_id}")
        return self.web.redirect(f"/messages/{result.queue_id}", f"resent {queue_id}")

    async def bulk(self, visit: Visit) -> Response:
        verb = visit.form.get("verb")
        ids = visit.form.all("id")
        if verb not in QUEUE_VERBS:
            return self.web.refused(visit, 400, "Choose an action.")
        changed = 0
        for queue_id in ids:
            changed += await self._apply(verb, queue_id)
            await self.web.audit(visit, verb, queue_id)
        status = visit.form.get("status", "deferred")
        return self.web.redirect(
            f"/queue?status={status}", f"{verb}: {changed} of {len(ids)} messages"
        )

    async def dkim(self, visit: Visit) -> Response:
        """rotate (the next key of each signing algorithm) or activate (a selector)."""
        verb = visit.request.path_params["verb"]
        domain, selector = visit.form.get("domain"), visit.form.get("selector")
        keys = KeyRing(self.web.deps.settings.data_dir)
        try:
            if verb == "rotate":
                made = keys.rotate(domain, self.web.deps.clock.time())
                notice = "new keys: " + ", ".join(k.selector for k in made)
                notice += " (publish the records, then activate)"
            elif verb == "activate":
                key = keys.activate(domain, selector)
                notice = f"{key.algorithm} signing with {key.selector}"
            else:
                return self.web.refused(visit, 404, f"No action {verb}.")
        except PostroomError as exc:
            return self.web.redirect("/domains", f"{verb} failed: {exc}")
        await self.web.audit(visit, f"dkim {verb}", f"{domain} {selector}".strip())
        return self.web.redirect("/domains", notice)

    async def create_key(self, visit: Visit) -> Response:
        """The new key is shown once, in this answer; only its hash is kept."""
        name = visit.form.get("name")
        try:
            scopes = parse_scopes(visit.form.all("scope") or ["send", "read"])
            new = await ApiKeys(self.store, self.web.deps.clock).create(
                name, visit.form.all("sender_domain"), scopes=scopes
            )
        except PostroomError as exc:
            return self.web.redirect("/keys", f"not created: {exc}")
        await self.web.audit(visit, "apikey create", name)
        return await self.pages.keys(visit, created=new.token, name=name)

    async def revoke_key(self, visit: Visit) -> Response:
        name = visit.form.get("name")
        try:
            await ApiKeys(self.store, self.web.deps.clock).revoke(name)
        except PostroomError as exc:
            return self.web.redirect("/keys", f"not revoked: {exc}")
        await self.web.audit(visit, "apikey revoke", name)
        return self.web.redirect("/keys", f"key {name} revoked")

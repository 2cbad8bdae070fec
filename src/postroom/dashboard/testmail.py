"""Send a test email: a form that sends through intake (the one gate, as every door),
then a result page that follows the message attempt by attempt (it reloads itself
while the recipient waits) with a plain-language diagnosis of each failure."""

from __future__ import annotations

import email.utils
from email.message import EmailMessage

from starlette.responses import Response

from postroom.dashboard.diagnosis import diagnose
from postroom.dashboard.web import Visit, Web
from postroom.errors import AddressError
from postroom.intake.principals import admin_principal
from postroom.intake.submission import Queued
from postroom.mail.address import parse_address
from postroom.mail.envelope import Recipient, Source, SourceKind

__all__ = ["TestMail"]


class TestMail:
    def __init__(self, web: Web) -> None:
        self.web = web

    def _default_sender(self) -> str:
        return f"postroom-test@{self.web.deps.settings.hostname}"

    async def form(self, visit: Visit, *, problem: str = "", status: int = 200) -> Response:
        values = {
            "sender": visit.form.get("sender") or self._default_sender(),
            "to": visit.form.get("to"),
            "subject": visit.form.get("subject") or "postroom test email",
        }
        return self.web.render(
            "test.html", visit, status, title="Send a test email", values=values, problem=problem
        )

    async def send(self, visit: Visit) -> Response:
        deps = self.web.deps
        try:
            sender = parse_address(visit.form.get("sender") or self._default_sender())
            recipient = parse_address(visit.form.get("to"))
        except AddressError as exc:
            return await self.form(visit, problem=f"Not an address: {exc}", status=422)
        message = EmailMessage()
        message["From"] = str(sender)
        message["To"] = str(recipient)
        message["Subject"] = visit.form.get("subject") or "postroom test email"
        message["Date"] = email.utils.formatdate(deps.clock.time(), usegmt=True)
        message.set_content(
            f"This is a test email sent from the postroom dashboard by {visit.admin}.\n"
        )
        result = await deps.intake.submit(
            Source(
                kind=SourceKind.SENDMAIL,
                principal=visit.admin,
                client_ip=visit.client or None,
                protocol="HTTP",
            ),
            sender,
            [Recipient(recipient)],
            message.as_bytes(),
            principal=admin_principal(visit.admin),
        )
        if not isinstance(result, Queued):
            lines = " ".join(result.lines)
            return await self.form(
                visit, problem=f"Refused: {result.code} {result.enhanced or ''} {lines}", status=422
            )
        if deps.queue_changed is not None:
            deps.queue_changed()
        await self.web.audit(visit, "test email", f"{result.queue_id} to {recipient}")
        return self.web.redirect(f"/test/{result.queue_id}")

    async def result(self, visit: Visit) -> Response:
        queue_id = visit.request.path_params["id"]
        store = self.web.deps.store
        message = await store.message(queue_id)
        if message is None:
            return self.web.refused(visit, 404, f"No message with id {queue_id}.")
        attempts = await store.attempts(queue_id)
        waiting = any(not r.status.is_final for r in message.recipients) and not message.held
        return self.web.render(
            "testresult.html",
            visit,
            title="Test email",
            message=message,
            attempts=[(a, diagnose(a)) for a in attempts],
            waiting=waiting,
        )

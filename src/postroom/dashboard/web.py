"""The dashboard's request handling: who is logged in, CSRF on every form, security
headers on every answer, pages rendered with autoescaping Jinja2 templates.

Every page goes through ``Web.page``: without a live session it sends the browser to the
login page; for a POST it parses the form (URL-encoded, bounded) and refuses it with 403
unless it carries the session's CSRF token and comes from this origin. Every answer gets
a Content-Security-Policy that allows scripts and styles only from the dashboard's own
files and forbids framing (``frame-ancestors 'none'``); the HTML preview of a message
gets a stricter one of its own (``preview_headers``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from postroom.dashboard.deps import DashboardDeps
from postroom.dashboard.format import FILTERS
from postroom.dashboard.sessions import Session, SessionSigner
from postroom.directory.admins import Admins
from postroom.store.models import AdminAction

__all__ = ["PREFIX", "Form", "Handler", "Visit", "Web", "security_headers"]

_log = logging.getLogger("postroom.dashboard")

PREFIX = "/dashboard"
SESSION_COOKIE = "postroom_session"
_MAX_FORM = 256 * 1024
_REFRESH = 60.0  # the session cookie is rewritten when its last-used time is older

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " form-action 'self'; frame-src 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def security_headers(
    csp: str = CSP, *, frame: str = "DENY", referrer: str = "same-origin"
) -> dict[str, str]:
    # same-origin, not no-referrer: under no-referrer a browser posts forms with
    # "Origin: null", and the origin check would refuse them all.
    return {
        "Content-Security-Policy": csp,
        "X-Frame-Options": frame,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": referrer,
        "Cache-Control": "no-store",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


class Form:
    """A posted URL-encoded form."""

    def __init__(self, fields: Mapping[str, list[str]]) -> None:
        self._fields = fields

    def get(self, name: str, default: str = "") -> str:
        values = self._fields.get(name)
        return values[0].strip() if values else default

    def all(self, name: str) -> list[str]:
        return [v.strip() for v in self._fields.get(name, []) if v.strip()]


@dataclass(slots=True)
class Visit:
    """One request of a logged-in admin."""

    request: Request
    session: Session
    csrf: str
    form: Form = field(default_factory=lambda: Form({}))

    @property
    def admin(self) -> str:
        return self.session.admin

    @property
    def client(self) -> str:
        return self.request.client.host if self.request.client else ""


Handler = Callable[[Visit], Awaitable[Response]]


class Web:
    def __init__(self, deps: DashboardDeps) -> None:
        self.deps = deps
        settings = deps.settings.dashboard
        self.signer = SessionSigner(
            deps.key, idle=settings.idle_timeout, max_age=settings.session_max_age
        )
        self.admins = Admins(deps.store, deps.clock)
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("postroom.dashboard", "templates"),
            autoescape=True,  # every value from a message is text, never markup
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(FILTERS)

    # -- answers ------------------------------------------------------------------------
    def render(
        self, template: str, visit: Visit | None, status: int = 200, **values: Any
    ) -> Response:
        html = self.templates.get_template(template).render(
            prefix=PREFIX,
            admin=visit.admin if visit else None,
            csrf=visit.csrf if visit else "",
            path=visit.request.url.path if visit else "",
            **values,
        )
        return HTMLResponse(html, status, headers=security_headers())

    def redirect(self, path: str, notice: str = "") -> Response:
        target = f"{PREFIX}{path}"
        if notice:
            separator = "&" if "?" in target else "?"
            target += f"{separator}{urlencode({'notice': notice})}"
        return RedirectResponse(target, 303, headers=security_headers())

    def refused(self, visit: Visit | None, status: int, message: str) -> Response:
        title = "Not found" if status == 404 else "Refused" if status < 500 else "Error"
        return self.render("error.html", visit, status, message=message, title=title)

    async def audit(self, visit: Visit, action: str, target: str = "") -> None:
        """Who did what, when: the store's audit log, and the server log."""
        _log.info("dashboard: %s %s %s (from %s)", visit.admin, action, target or "-", visit.client)
        await self.deps.store.record_admin_action(
            AdminAction(self.deps.clock.time(), visit.admin, action, target, visit.client)
        )

    # -- sessions -----------------------------------------------------------------------
    async def session_of(self, request: Request) -> Session | None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        session = self.signer.read(token, self.deps.clock.time())
        if session is None:
            return None
        record = await self.deps.store.admin(session.admin)
        if record is None or session.began <= record.sessions_after:
            return None
        return session

    def set_session(self, response: Response, request: Request, session: Session) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            self.signer.token(session),
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def clear_session(self, response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path=PREFIX, httponly=True, samesite="strict")

    async def is_on(self) -> bool:
        """The dashboard answers only while an admin exists."""
        return bool(await self.deps.store.admins())

    # -- the guard ----------------------------------------------------------------------
    def page(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = await self.session_of(request)
            if session is None:
                if not await self.is_on():
                    return off()
                if request.method != "GET":
                    return self.refused(None, 403, "Your session has ended: log in again.")
                return self.redirect("/login")
            visit = Visit(request, session, self.signer.csrf(session))
            if request.method == "POST":
                form = await read_form(request)
                if form is None or not self.signer.csrf_ok(session, form.get("csrf")):
                    return self.refused(visit, 403, "The form was refused (CSRF check failed).")
                if not same_origin(request):
                    return self.refused(visit, 403, "The form was refused (another origin).")
                visit.form = form
            response = await handler(visit)
            now = self.deps.clock.time()
            set_already = any(
                c.startswith(f"{SESSION_COOKIE}=") for c in response.headers.getlist("set-cookie")
            )  # logout cleared it: not to be written back
            if now - session.seen >= _REFRESH and not set_already:
                self.set_session(response, request, Session(session.admin, session.began, now))
            return response

        return endpoint


def off() -> Response:
    return HTMLResponse(
        "<!doctype html><title>postroom</title><p>The dashboard is off: no admin exists"
        " (<code>postroom admin add NAME</code>).</p>",
        404,
        headers=security_headers(),
    )


async def read_form(request: Request) -> Form | None:
    """The URL-encoded body, or None when it is something else or too large."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM:
            return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return Form(parse_qs(text, keep_blank_values=True))


def same_origin(request: Request) -> bool:
    """A browser's Origin (or Referer) names this host (``Host``, or ``X-Forwarded-Host``
    from a proxy that rewrites Host: a cross-site form cannot set either); a form from
    elsewhere does not. Neither header: not a browser's cross-site post, the CSRF token
    decides."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin != "null"
    hosts = {request.headers.get("host", ""), request.headers.get("x-forwarded-host", "")}
    return urlsplit(origin).netloc in hosts - {""}

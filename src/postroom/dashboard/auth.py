"""Logging in and out. Failed logins count in the AUTH throttle shared with SMTP AUTH
(per client address and per account), so the dashboard is no side door for guessing
passwords; a throttled attempt is refused before any password is checked.

The login form carries a CSRF token too (a random value in a short-lived cookie and in
the form, which must match), so no other site can log a browser in as someone else.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import secrets

from starlette.requests import Request
from starlette.responses import Response

from postroom.dashboard.sessions import Session
from postroom.dashboard.web import PREFIX, Visit, Web, off, read_form, same_origin
from postroom.errors import StoreError

__all__ = ["Login"]

_LOGIN_COOKIE = "postroom_login"
_log = logging.getLogger("postroom.dashboard")


class Login:
    def __init__(self, web: Web) -> None:
        self.web = web

    async def form(self, request: Request, *, error: str = "", status: int = 200) -> Response:
        if not await self.web.is_on():
            return off()
        if error == "" and await self.web.session_of(request) is not None:
            return self.web.redirect("/")
        token = secrets.token_urlsafe(24)
        response = self.web.render(
            "login.html", None, status, login_token=token, error=error, title="Log in"
        )
        response.set_cookie(
            _LOGIN_COOKIE,
            token,
            max_age=3600,
            path=f"{PREFIX}/login",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def submit(self, request: Request) -> Response:
        if not await self.web.is_on():
            return off()
        form = await read_form(request)
        expected = request.cookies.get(_LOGIN_COOKIE, "")
        if (
            form is None
            or not expected
            or not hmac.compare_digest(form.get("csrf").encode(), expected.encode())
            or not same_origin(request)
        ):
            return await self.form(request, error="The form was refused: try again.", status=403)
        name, password = form.get("name"), form.get("password")
        client = request.client.host if request.client else ""
        try:
            attempt = await self.web.deps.throttle.begin(client, f"admin {name}")
        except StoreError as exc:  # the shared counts are out of reach: check nothing
            _log.warning(
                "dashboard: login not checked, the failure counts are unavailable: %s", exc
            )
            return await self.form(
                request, error="Logins are unavailable for a moment: try again.", status=503
            )
        if attempt is None:
            _log.warning("dashboard: login as %r from %s throttled", name, client or "-")
            return await self.form(
                request, error="Too many failed logins: wait a few minutes.", status=429
            )
        record = await self.web.admins.verify(name, password)
        if record is None:
            _log.warning("dashboard: failed login as %r from %s", name, client or "-")
            return await self.form(request, error="Wrong name or password.", status=401)
        with contextlib.suppress(StoreError):  # logged in all the same; the slot stays
            await attempt.succeeded()
        now = self.web.deps.clock.time()
        session = Session(record.name, now, now)
        visit = Visit(request, session, "")
        await self.web.audit(visit, "login")
        response = self.web.redirect("/")
        self.web.set_session(response, request, session)
        response.delete_cookie(_LOGIN_COOKIE, path=f"{PREFIX}/login")
        return response

    async def logout(self, visit: Visit) -> Response:
        """Ends every session of this admin (the store's sessions_after), not only this
        browser's: a copied cookie dies with it."""
        await self.web.deps.store.end_admin_sessions(visit.admin, self.web.deps.clock.time())
        await self.web.audit(visit, "logout")
        response = self.web.redirect("/login")
        self.web.clear_session(response)
        return response

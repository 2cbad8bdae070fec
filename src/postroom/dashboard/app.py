"""create_dashboard(deps): the dashboard's routes, an ASGI app the API's server mounts
under /dashboard. Every page but the login form and the static files passes ``Web.page``
(a live session; for a POST the CSRF token)."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from postroom.dashboard.actions import Actions
from postroom.dashboard.auth import Login
from postroom.dashboard.content import Content
from postroom.dashboard.deps import DashboardDeps
from postroom.dashboard.eventpages import EventPages
from postroom.dashboard.pages import Pages
from postroom.dashboard.testmail import TestMail
from postroom.dashboard.web import Web, security_headers

__all__ = ["create_dashboard"]

_log = logging.getLogger("postroom.dashboard")


def create_dashboard(deps: DashboardDeps) -> Starlette:
    web = Web(deps)
    login = Login(web)
    pages = Pages(web)
    actions = Actions(web, pages)
    content = Content(web)
    test = TestMail(web)
    lists = EventPages(web)
    page = web.page

    async def login_form(request: Request) -> Response:
        return await login.form(request)

    routes: list[BaseRoute] = [
        Route("/", page(pages.overview)),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login.submit, methods=["POST"]),
        Route("/logout", page(login.logout), methods=["POST"]),
        Route("/log", page(pages.log)),
        Route("/messages/{id}", page(pages.message)),
        Route("/messages/{id}/preview", page(content.preview)),
        Route("/messages/{id}/raw", page(content.raw)),
        Route("/messages/{id}/attachments/{index}", page(content.attachment)),
        Route("/messages/{id}/{verb}", page(actions.message), methods=["POST"]),
        Route("/queue", page(pages.queue)),
        Route("/queue/bulk", page(actions.bulk), methods=["POST"]),
        Route("/mailers", page(pages.mailers)),
        Route("/captured", page(pages.captured)),
        Route("/domains", page(pages.domains)),
        Route("/domains/dkim/{verb}", page(actions.dkim), methods=["POST"]),
        Route("/keys", page(pages.keys)),
        Route("/keys/create", page(actions.create_key), methods=["POST"]),
        Route("/keys/revoke", page(actions.revoke_key), methods=["POST"]),
        Route("/suppressions", page(lists.suppression_list)),
        Route("/suppressions/add", page(lists.suppress), methods=["POST"]),
        Route("/suppressions/remove", page(lists.unsuppress), methods=["POST"]),
        Route("/webhooks", page(lists.webhooks)),
        Route("/webhooks/test", page(lists.test_webhook), methods=["POST"]),
        Route("/audit", page(pages.audit)),
        Route("/test", page(test.form), methods=["GET"]),
        Route("/test", page(test.send), methods=["POST"]),
        Route("/test/{id}", page(test.result)),
        Mount("/static", StaticFiles(packages=[("postroom.dashboard", "static")])),
    ]

    async def failed(request: Request, exc: Exception) -> Response:
        _log.error("dashboard %s %s failed", request.method, request.url.path, exc_info=exc)
        return web.refused(None, 500, "Something went wrong; the server log says what.")

    async def not_found(request: Request, exc: Exception) -> Response:
        return web.refused(None, 404, "No such page.")

    app = Starlette(routes=routes, exception_handlers={Exception: failed, 404: not_found})
    app.add_middleware(_SecurityHeaders)
    return app


class _SecurityHeaders:
    """Every answer gets the security headers, static files and Starlette's own answers
    (404, 405) too; an answer that set its own (the preview's) keeps them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in security_headers().items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)

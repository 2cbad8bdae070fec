"""``/t/...``: the URLs postroom writes into mail (``feedback.links``), without an API key:
the token in the path is signed, so only a URL postroom made is answered.

- ``GET /t/o/<token>.gif``: the tracking pixel (a 1x1 GIF), an ``opened`` event.
- ``GET /t/c/<token>``: a tracked link: ``302`` to its URL, a ``clicked`` event.
- ``GET /t/u/<token>``: the unsubscribe confirmation page (a form that POSTs back);
  a GET changes nothing, because link scanners follow every link they see.
- ``POST /t/u/<token>``: unsubscribe (RFC 8058 one-click: the mailbox provider POSTs
  ``List-Unsubscribe=One-Click``; the page's button does the same).

A token that is not ours is a ``404`` in the API's error shape.
"""

from __future__ import annotations

import base64
import html

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from postroom.api.errors import ApiError
from postroom.feedback import EngagementDesk, Link, LinkKind

__all__ = ["TrackingApi"]

# The smallest transparent GIF (43 bytes).
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_NO_STORE = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer"}
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title></head>
<body style="font-family:sans-serif;max-width:32em;margin:3em auto">
<h1>{title}</h1>{body}</body></html>
"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=title, body=body), status, headers=_NO_STORE)


class TrackingApi:
    def __init__(self, desk: EngagementDesk) -> None:
        self._desk = desk

    async def open(self, request: Request) -> Response:
        if await self._fetched(request, LinkKind.OPEN) is None:
            raise ApiError(404, "no such image")
        return Response(PIXEL, media_type="image/gif", headers=_NO_STORE)

    async def click(self, request: Request) -> Response:
        link = await self._fetched(request, LinkKind.CLICK)
        if link is None:
            raise ApiError(404, "no such link")
        return RedirectResponse(link.url, 302, headers=_NO_STORE)

    async def unsubscribe_page(self, request: Request) -> Response:
        link = self._desk.unsubscribe_link(request.path_params["token"])
        if link is None:
            raise ApiError(404, "no such unsubscribe link")
        who = html.escape(link.recipient)
        scope = f" from {html.escape(link.scope)}" if link.scope else ""
        return _page(
            "Unsubscribe",
            f"<p>Stop sending mail to <b>{who}</b>{scope}?</p>"
            '<form method="post"><input type="hidden" name="List-Unsubscribe" '
            'value="One-Click"><button type="submit">Unsubscribe</button></form>',
        )

    async def unsubscribe(self, request: Request) -> Response:
        # RFC 8058 3.2: the body is List-Unsubscribe=One-Click. Any POST to a valid
        # token unsubscribes: the token says who, so the body is not read.
        link = await self._desk.unsubscribe(request.path_params["token"], "one-click")
        if link is None:
            raise ApiError(404, "no such unsubscribe link")
        return _page("Unsubscribed", f"<p>{html.escape(link.recipient)} is unsubscribed.</p>")

    async def _fetched(self, request: Request, kind: LinkKind) -> Link | None:
        agent = request.headers.get("user-agent", "")
        return await self._desk.fetched(kind, request.path_params["token"], agent)

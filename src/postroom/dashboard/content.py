"""A message's own bytes, served apart from the pages: the HTML preview (for a sandboxed
iframe), the raw .eml, and attachments, each as a download or inert document.

The preview is the message's HTML as it is, under a policy of its own: no script at
all, no plugin, no form, no navigation, no remote load (images, fonts, styles from the
network) unless the admin asked for remote content with ``?remote=1``; CSP ``sandbox``
makes it a unique origin even if opened outside the iframe, which is itself sandboxed.
"""

from __future__ import annotations

from starlette.responses import Response

from postroom.dashboard.mime import attachment, read_message
from postroom.dashboard.web import Visit, Web, security_headers

__all__ = ["Content", "preview_policy"]


def preview_policy(remote: bool) -> str:
    images = "data: cid: https: http:" if remote else "data: cid:"
    return (
        f"default-src 'none'; style-src 'unsafe-inline'; img-src {images}; font-src data:;"
        " sandbox; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
    )


class Content:
    def __init__(self, web: Web) -> None:
        self.web = web

    async def _data(self, visit: Visit) -> bytes | None:
        return await self.web.deps.store.read_body(visit.request.path_params["id"])

    async def preview(self, visit: Visit) -> Response:
        data = await self._data(visit)
        shown = read_message(data) if data is not None else None
        if shown is None or shown.html is None:
            return self.web.refused(visit, 404, "This message has no HTML body.")
        remote = visit.request.query_params.get("remote") == "1"
        headers = security_headers(
            preview_policy(remote), frame="SAMEORIGIN", referrer="no-referrer"
        )
        return Response(shown.html, 200, headers=headers, media_type="text/html")

    async def raw(self, visit: Visit) -> Response:
        data = await self._data(visit)
        if data is None:
            return self.web.refused(visit, 404, "The message's body is not kept.")
        queue_id = visit.request.path_params["id"]
        headers = security_headers()
        headers["Content-Disposition"] = f'attachment; filename="{queue_id}.eml"'
        await self.web.audit(visit, "download", queue_id)
        return Response(data, 200, headers=headers, media_type="message/rfc822")

    async def attachment(self, visit: Visit) -> Response:
        data = await self._data(visit)
        try:
            index = int(visit.request.path_params["index"])
        except ValueError:
            index = -1
        found = attachment(data, index) if data is not None else None
        if found is None:
            return self.web.refused(visit, 404, "No such attachment.")
        filename, _kind, payload = found
        headers = security_headers()
        # Always a download of opaque bytes: a browser never renders it on our origin.
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in filename)[:100]
        headers["Content-Disposition"] = f'attachment; filename="{safe or "attachment"}"'
        return Response(payload, 200, headers=headers, media_type="application/octet-stream")

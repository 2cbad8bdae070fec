"""Open and click tracking, the message side (sans-IO): the HTML parts of a message get a
pixel and their links rewritten to postroom's ``/t/...`` URLs, and a fetch of those URLs
is judged human or machine.

``X-Postroom-Track`` (``opens``, ``clicks``, ``opens, clicks``, ``yes`` for both, ``no``)
asks for it per message; intake reads the field, removes it, and calls ``track_message``
before DKIM signs, so the signature covers the rewritten parts.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage

__all__ = ["TRACK_FIELD", "Tracking", "is_machine", "parse_track", "track_html", "track_message"]

TRACK_FIELD = "X-Postroom-Track"


@dataclass(frozen=True, slots=True)
class Tracking:
    opens: bool = False
    clicks: bool = False

    def __bool__(self) -> bool:
        return self.opens or self.clicks


_WORDS = {
    "yes": Tracking(True, True),
    "all": Tracking(True, True),
    "on": Tracking(True, True),
    "opens": Tracking(opens=True),
    "open": Tracking(opens=True),
    "clicks": Tracking(clicks=True),
    "click": Tracking(clicks=True),
    "no": Tracking(),
    "off": Tracking(),
    "none": Tracking(),
}


def parse_track(value: str) -> Tracking | None:
    """``X-Postroom-Track``'s value, or None when a word in it is not one of ours."""
    opens = clicks = False
    for word in re.split(r"[\s,]+", value.strip().lower()):
        if not word:
            continue
        found = _WORDS.get(word)
        if found is None:
            return None
        opens, clicks = opens or found.opens, clicks or found.clicks
    return Tracking(opens, clicks)


# <a ... href="..."> (either quote, or none); the URL as written, entities and all.
_ANCHOR_HREF = re.compile(
    r"""(<a\b[^>]*?\bhref\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s>"']+))""", re.I | re.S
)
_BODY_END = re.compile(r"</body\s*>", re.I)


def track_html(text: str, *, pixel: str | None, link: Callable[[str], str] | None) -> str:
    """``text`` with each http(s) link replaced by ``link(url)`` and ``pixel`` (an image
    URL) added before ``</body>`` (or at the end). Links to elsewhere (``mailto:``,
    anchors) and links marked ``data-postroom-track="no"`` stay as they are."""
    if link is not None:

        def rewrite(match: re.Match[str]) -> str:
            written = next(g for g in match.groups()[1:] if g is not None)
            url = html.unescape(written).strip()
            opening = match.group(0)
            if not url.lower().startswith(("http://", "https://")) or re.search(
                r"data-postroom-track\s*=\s*[\"']?no", opening, re.I
            ):
                return opening
            return f'{match.group(1)}"{html.escape(link(url), quote=True)}"'

        text = _ANCHOR_HREF.sub(rewrite, text)
    if pixel is not None:
        image = (
            f'<img src="{html.escape(pixel, quote=True)}" width="1" height="1" alt="" '
            'style="display:block;border:0;width:1px;height:1px">'
        )
        ends = list(_BODY_END.finditer(text))
        at = ends[-1].start() if ends else len(text)
        text = text[:at] + image + text[at:]
    return text


def track_message(
    data: bytes, *, pixel: str | None, link: Callable[[str], str] | None
) -> bytes | None:
    """The whole message with every text/html part tracked (``track_html``), or None
    when it has no HTML part (nothing to change)."""
    message = email.message_from_bytes(data, policy=email.policy.SMTP)
    assert isinstance(message, EmailMessage)  # the SMTP policy's message factory
    changed = False
    for part in message.walk():
        if part.get_content_type() != "text/html" or part.is_attachment():
            continue
        assert isinstance(part, EmailMessage)
        original = part.get_content()
        if not isinstance(original, str):
            continue
        transfer = (part.get("Content-Transfer-Encoding") or "").lower()
        part.set_content(
            track_html(original, pixel=pixel, link=link),
            subtype="html",
            charset=part.get_content_charset() or "utf-8",
            cte="quoted-printable" if transfer not in ("base64",) else "base64",
        )
        changed = True
        pixel = None  # one pixel per message: a second alternative would count twice
    return message.as_bytes() if changed else None


# User agents of fetchers that are not the reader: mail-privacy proxies that load every
# image on arrival, and link scanners (security gateways, link previews).
_MACHINE_AGENTS = re.compile(
    r"googleimageproxy|ggpht\.com|yahoomailproxy|yahoo! slurp|outlook-ios-linkpreview"
    r"|bingpreview|microsoft office|ms-office|safelinks|barracuda|mimecast|proofpoint"
    r"|urldefense|symantec|forcepoint|trend ?micro|sophos|fortiguard|checkpoint|cisco"
    r"|ironport|zscaler|linkpreview|facebookexternalhit|slackbot|skypeuripreview"
    r"|headlesschrome|phantomjs|python-requests|go-http-client|java/|bot\b|spider|crawler",
    re.I,
)
# Apple Mail Privacy Protection fetches with a bare WebKit string: no Safari, no Mobile.
_APPLE_PROXY = re.compile(r"^Mozilla/5\.0 \([^)]*\) AppleWebKit/[\d.]+ \(KHTML, like Gecko\)$")
MACHINE_WINDOW = 10.0  # seconds after delivery within which a fetch is a scanner's


def is_machine(
    user_agent: str, *, since_delivery: float | None, window: float = MACHINE_WINDOW
) -> str | None:
    """Why a fetch was a machine's (``"user-agent"``, ``"timing"``), or None. A fetch
    within ``window`` seconds of delivery is a gateway scanning the message on arrival:
    no person opens mail that fast."""
    agent = user_agent.strip()
    if not agent or _MACHINE_AGENTS.search(agent) or _APPLE_PROXY.match(agent):
        return "user-agent"
    if since_delivery is not None and 0 <= since_delivery < window:
        return "timing"
    return None

"""The addresses and URLs postroom writes into mail so that what comes back names the
message: VERP return paths, the tracking pixel, tracked links, List-Unsubscribe. All
carry a token signed by ``mail.tokens.TokenSigner``; ``Links`` makes them and reads them
back, and nothing else knows their shape.

A token names the queue id and, when the message has one recipient, that recipient: a
message's body is the same for all its recipients (it is signed once, at intake), so a
message to several people can say which message was opened, not by whom.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote

from postroom.config.feedback import BounceSettings
from postroom.config.settings import Settings
from postroom.mail.address import Address
from postroom.mail.tokens import TokenKey, TokenSigner

__all__ = ["Link", "LinkKind", "Links", "links_for"]


class LinkKind(StrEnum):
    OPEN = "o"
    CLICK = "c"
    UNSUBSCRIBE = "u"


@dataclass(frozen=True, slots=True)
class Link:
    """What a token read back names."""

    kind: LinkKind
    queue_id: str
    recipient: str  # "" when the message had several recipients
    url: str = ""  # a click's destination
    scope: str = ""  # an unsubscribe's sender domain


@dataclass(frozen=True, slots=True)
class Links:
    signer: TokenSigner
    base_url: str  # "https://mail.example.com", no slash at the end
    bounces: BounceSettings

    # --- return paths ---------------------------------------------------------------------

    def return_path(self, sender: str, queue_id: str, verp: bool | None = None) -> str:
        """The envelope sender a message leaves with: VERP's when asked (``verp``, the
        route's choice, else ``[bounces] verp``), else its own. The null sender stays
        null (RFC 5321 4.5.5: nothing may answer a bounce)."""
        if not (self.bounces.verp if verp is None else verp) or not sender:
            return sender
        domain = self.bounces.domain or sender.rpartition("@")[2]
        return f"{self.bounces.prefix}+{self.signer.verp(queue_id)}@{domain}"

    def returned(self, address: Address) -> str | None:
        """For a bounce address of ours, the queue id it names ("" for the plain
        ``<prefix>@<domain>``, linked by the report's Message-ID); None for any other
        address. A token that does not verify is not ours: the address is treated as any
        other, and refused as one."""
        local = address.local.lower()
        prefix = self.bounces.prefix.lower()
        domain = (self.bounces.domain or "").lower()
        if local == prefix:
            return "" if domain and address.ascii_domain.lower() == domain else None
        if not local.startswith(prefix + "+"):
            return None
        return self.signer.read_verp(local[len(prefix) + 1 :])

    # --- tracking and unsubscribe URLs ------------------------------------------------------

    def pixel(self, queue_id: str, recipient: str) -> str:
        return self._url(LinkKind.OPEN, queue_id, recipient) + ".gif"

    def click(self, queue_id: str, recipient: str, url: str) -> str:
        return self._url(LinkKind.CLICK, queue_id, recipient, url)

    def unsubscribe(self, queue_id: str, recipient: str, scope: str) -> str:
        return self._url(LinkKind.UNSUBSCRIBE, queue_id, recipient, scope)

    def _url(self, kind: LinkKind, *fields: str) -> str:
        token = self.signer.sign(kind.value, *fields)
        return f"{self.base_url}/t/{kind.value}/{quote(token, safe='.')}"

    def read(self, kind: LinkKind, token: str) -> Link | None:
        """What a ``/t/<kind>/<token>`` URL names, or None when the token is not ours."""
        fields = self.signer.read(kind.value, token.removesuffix(".gif"))
        if fields is None:
            return None
        match kind, fields:
            case LinkKind.OPEN, (queue_id, recipient):
                return Link(kind, queue_id, recipient)
            case LinkKind.CLICK, (queue_id, recipient, url):
                return Link(kind, queue_id, recipient, url=url)
            case LinkKind.UNSUBSCRIBE, (queue_id, recipient, scope):
                return Link(kind, queue_id, recipient, scope=scope)
        return None


def links_for(settings: Settings) -> Links:
    """The server's links: its token key (made on first use), the public URL of its API."""
    base = settings.tracking.base_url or f"http://{settings.hostname}:{settings.api.port}"
    return Links(TokenSigner(TokenKey.load(settings.data_dir)), base, settings.bounces)

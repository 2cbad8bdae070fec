"""One delivery's envelope recipients as the To, Cc and Bcc lists of JSON API requests.

A JSON API sends to exactly the addresses in its To, Cc and Bcc fields, so those must be
this delivery's recipients and no others: a header address that is not (delivered
before, or routed to another mailer) is left out, or it would get a second copy.
Recipients keep the field the message's headers put them in; the others go in Bcc.
Where a provider caps each field, the recipients are spread over several requests. A
request needs someone in To: when a request would have only Bcc recipients, each of them
gets a request of their own with themselves in To, so no one sees another's address.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from postroom.delivery.mailers.api.mimeparts import Mailbox, ParsedMessage

__all__ = ["Addressed", "split"]


@dataclass(frozen=True, slots=True)
class Addressed:
    to: tuple[Mailbox, ...]
    cc: tuple[Mailbox, ...] = ()
    bcc: tuple[Mailbox, ...] = ()

    @property
    def recipients(self) -> tuple[str, ...]:
        return tuple(box.email for box in (*self.to, *self.cc, *self.bcc))


def split(
    parsed: ParsedMessage,
    recipients: Sequence[str],
    *,
    max_to: int = 1000,
    max_cc: int = 1000,
    max_bcc: int = 1000,
) -> list[Addressed]:
    wanted = {r.lower(): r for r in recipients}
    to = _keep(parsed.to, wanted)
    cc = _keep(parsed.cc, wanted)
    bcc = [Mailbox(r) for r in wanted.values()]  # the rest, in envelope order
    requests: list[Addressed] = []
    while to or cc:
        requests.append(Addressed(_take(to, max_to), _take(cc, max_cc), _take(bcc, max_bcc)))
    # A request may hold to/cc recipients while Bcc ones remain: those go on alone.
    requests.extend(Addressed((box,)) for box in bcc)
    return requests


def _keep(boxes: Sequence[Mailbox], wanted: dict[str, str]) -> list[Mailbox]:
    kept = []
    for box in boxes:
        address = wanted.pop(box.email.lower(), None)
        if address is not None:
            kept.append(Mailbox(address, box.name))  # the envelope's spelling
    return kept


def _take(boxes: list[Mailbox], limit: int) -> tuple[Mailbox, ...]:
    taken = tuple(boxes[:limit])
    del boxes[:limit]
    return taken

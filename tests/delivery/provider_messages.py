"""A message with everything a JSON conversion can get wrong: non-ASCII names and
subject, text and HTML alternatives, an attachment with a non-ASCII file name and an
inline image referenced by Content-ID."""

from __future__ import annotations

import email.policy
from email.message import EmailMessage

from postroom.delivery.message import OutboundMessage, OutboundRecipient

__all__ = ["PDF", "PNG", "message", "recipients"]

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.7\n" + bytes(range(255, -1, -1)) * 3


def message(
    *, to: str = "Jürgen Straße <juergen@example.net>", cc: str | None = None
) -> OutboundMessage:
    mail = EmailMessage(policy=email.policy.SMTP)
    mail["From"] = "Zoë Ärger <zoe@example.org>"
    mail["To"] = to
    if cc:
        mail["Cc"] = cc
    mail["Subject"] = "Grüße aus Köln ☕"
    mail["Message-ID"] = "<20270115.1@example.org>"
    mail["X-Campaign"] = "winter"
    mail.set_content("Hallo Jürgen, siehe Anhang.\n")
    mail.add_alternative(
        '<p>Hallo <b>Jürgen</b> <img src="cid:logo@example.org"></p>\n', subtype="html"
    )
    html = mail.get_body(("html",))
    assert html is not None
    html.add_related(
        PNG, "image", "png", cid="<logo@example.org>", filename="logo.png", disposition="inline"
    )
    mail.add_attachment(PDF, "application", "pdf", filename="résumé.pdf")
    return OutboundMessage(id="01J0MESSAGE", sender="zoe@example.org", data=mail.as_bytes())


def recipients(*addresses: str) -> list[OutboundRecipient]:
    return [OutboundRecipient(a) for a in addresses]

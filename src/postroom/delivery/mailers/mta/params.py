"""What goes on MAIL FROM and RCPT TO for one message at one peer, and when not to send.

Parameters are given only when the peer announced the extension: SIZE (RFC 1870), BODY
(RFC 6152), SMTPUTF8 (RFC 6531), RET/ENVID and NOTIFY/ORCPT (RFC 3461). A message that
the peer cannot take (over its SIZE, or needing SMTPUTF8 it does not offer) is refused
here, before MAIL, with the reply the peer would have given.
"""

from __future__ import annotations

from collections.abc import Mapping

from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.smtp.grammar import xtext_encode
from postroom.smtp.replies import Reply

__all__ = ["local_refusal", "mail_parameters", "rcpt_parameters"]


def mail_parameters(message: OutboundMessage, extensions: Mapping[str, str]) -> list[str]:
    params = []
    if "size" in extensions:
        params.append(f"SIZE={len(message.data)}")
    if message.body_type.upper() == "8BITMIME" and "8bitmime" in extensions:
        params.append("BODY=8BITMIME")
    if message.smtputf8 and "smtputf8" in extensions:
        params.append("SMTPUTF8")
    if "dsn" in extensions:
        if message.ret:
            params.append(f"RET={message.ret.upper()}")
        if message.envid:
            params.append(f"ENVID={xtext_encode(message.envid)}")
    return params


def rcpt_parameters(recipient: OutboundRecipient, extensions: Mapping[str, str]) -> list[str]:
    if "dsn" not in extensions:
        return []  # RFC 3461 4.2 "relayed" DSNs are the caller's business
    params = []
    if recipient.notify:
        params.append(f"NOTIFY={recipient.notify.upper().replace(' ', '')}")
    if recipient.orcpt:
        kind, _, address = recipient.orcpt.partition(";")
        # Stored xtext-decoded, except utf-8-addr-xtext which is kept as given (RFC 6533).
        value = address if kind.lower() == "utf-8" else xtext_encode(address)
        params.append(f"ORCPT={kind};{value}")
    return params


def local_refusal(
    message: OutboundMessage, extensions: Mapping[str, str], where: str
) -> Reply | None:
    limit = extensions.get("size", "").strip()
    if limit.isdigit() and 0 < int(limit) < len(message.data):
        text = f"Message size ({len(message.data)} bytes) exceeds the limit of {where} ({limit})"
        return Reply(552, "5.3.4", text)
    if message.smtputf8 and "smtputf8" not in extensions:
        return Reply(550, "5.6.7", f"SMTPUTF8 is required, but was not offered by {where}")
    return None

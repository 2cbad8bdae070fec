"""The one log line of a failed or throttled login, whichever protocol it came by.

SMTP AUTH, POP3 and IMAP logins write the same line (docs/configuration.md, for
fail2ban); only the logger's name says which protocol. The account is JSON-quoted:
what a client sends can never end or fake a line.
"""

from __future__ import annotations

import json
import logging

from postroom.errors import AddressError
from postroom.events.logformat import FIELDS
from postroom.mail.address import MAX_PATH, address_key

__all__ = ["auth_account", "log_auth"]


def auth_account(username: str) -> str:
    """The account a login names, as the directory looks it up (cut to the longest
    address, so a huge username costs no more memory in the throttle)."""
    try:
        return address_key(username)
    except AddressError:
        return username.strip().lower()[:MAX_PATH]


def log_auth(
    log: logging.Logger, outcome: str, client: str | None, account: str, listener: str
) -> None:
    """``outcome``: "failed" or "throttled"."""
    client, account = client or "unknown", account[:MAX_PATH]
    log.warning(
        "auth %s: client=%s account=%s listener=%s",
        outcome,
        client,
        json.dumps(account),
        listener,
        extra={
            FIELDS: {"auth": outcome, "client": client, "account": account, "listener": listener}
        },
    )

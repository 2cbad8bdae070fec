"""A Django email backend that sends through postroom's HTTP API.

    EMAIL_BACKEND = "postroom.contrib.django.EmailBackend"
    POSTROOM_API_URL = "http://127.0.0.1:8025"
    POSTROOM_API_KEY = "pr_..."
    POSTROOM_API_TIMEOUT = 30  # optional, seconds

Each message goes as it is: Django's own MIME (``message.message()``: alternatives,
attachments, Cc, Reply-To, custom headers) in the API's raw form, with the envelope
``from_email`` -> ``recipients()`` (To + Cc + Bcc; the server removes any Bcc header).
"""

from __future__ import annotations

from collections.abc import Sequence
from email.utils import parseaddr
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMessage

from postroom.client import Client, PostroomError

__all__ = ["EmailBackend"]


class EmailBackend(BaseEmailBackend):  # type: ignore[misc]  # Django ships no type hints
    def __init__(
        self,
        fail_silently: bool = False,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(fail_silently=fail_silently, **kwargs)
        url = api_url or getattr(settings, "POSTROOM_API_URL", None)
        key = api_key or getattr(settings, "POSTROOM_API_KEY", None)
        if not url or not key:
            raise ImproperlyConfigured("set POSTROOM_API_URL and POSTROOM_API_KEY")
        self.api_url: str = str(url)
        self.api_key: str = str(key)
        self.timeout = timeout or float(getattr(settings, "POSTROOM_API_TIMEOUT", 30))
        self._client: Client | None = None

    def open(self) -> bool:
        """Open the HTTP connection pool; True when this call opened it (Django's rule)."""
        if self._client is not None:
            return False
        self._client = Client(self.api_url, self.api_key, timeout=self.timeout)
        return True

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        """Send each message; the number the server accepted."""
        if not email_messages:
            return 0
        opened = self.open()
        assert self._client is not None
        sent = 0
        try:
            for message in email_messages:
                if self._send(self._client, message):
                    sent += 1
        finally:
            if opened:
                self.close()
        return sent

    def _send(self, client: Client, message: EmailMessage) -> bool:
        # Envelope addresses without display names ("Shop <shop@example.com>" -> the address).
        recipients = [parseaddr(r)[1] for r in message.recipients()]
        if not recipients:
            return False
        try:
            client.send_raw(
                message.message().as_bytes(linesep="\r\n"),
                mail_from=parseaddr(message.from_email)[1],
                rcpt=recipients,
            )
        except PostroomError:
            if not self.fail_silently:
                raise
            return False
        return True

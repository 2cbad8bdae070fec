"""``POST /hooks/{mailer}``: check a provider's callback, map it, record it.

``handle_webhook`` is all the API route does: it passes the mailer's settings, the
request's headers and raw body, and sends back the status and JSON this returns. The
answers follow what providers do with them: 2xx is done; 401 (not signed by whom the
settings name) and 400 (not a payload of theirs) are refused; 503 (our settings are
incomplete, or the store is down) makes the provider try again later.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Protocol

from pydantic import SecretStr

from postroom.clock import Clock
from postroom.config.secrets import MissingSecret, read_secret
from postroom.config.webhooks import WebhookSettings
from postroom.delivery.webhooks import (
    basic,
    brevo,
    mailgun,
    mailjet,
    postmark,
    resend,
    sendgrid,
    sendlayer,
    ses,
    sns,
    sparkpost,
)
from postroom.delivery.webhooks.events import EventStatus, PayloadError, ProviderEvent
from postroom.errors import StoreError
from postroom.store.base import LogStore, QueueStore, SuppressionStore
from postroom.store.models import (
    GLOBAL_SCOPE,
    ProviderEventRecord,
    Suppression,
    SuppressionReason,
)

__all__ = ["PROVIDERS", "HookStore", "HookedMailer", "Response", "handle_webhook"]

_log = logging.getLogger("postroom.webhooks")

Response = tuple[int, dict[str, Any]]
Parse = Callable[[bytes], list[ProviderEvent]]


class HookedMailer(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def webhook(self) -> WebhookSettings | None: ...


class HookStore(LogStore, QueueStore, SuppressionStore, Protocol):
    """What a callback is recorded in: the log (and outbox), the message it names (for
    its sender's domain), the suppression list its bounces and complaints go on."""


class _Unconfigured(Exception):
    """A setting the provider's way of signing needs is missing or unusable."""


@dataclass(frozen=True, slots=True)
class _Hook:
    settings: WebhookSettings
    environ: Mapping[str, str]
    now: float

    def secret(self, name: str) -> str:
        value: SecretStr | None = getattr(self.settings, name)
        env: str | None = getattr(self.settings, f"{name}_env")
        try:
            return read_secret(name, value, env, self.environ)
        except MissingSecret as exc:
            problem = f"webhook.{name} is not set" if exc.key == name else exc.problem
            raise _Unconfigured(problem) from None


Verify = Callable[[_Hook, Mapping[str, str], bytes], bool]


def _sendgrid(hook: _Hook, headers: Mapping[str, str], body: bytes) -> bool:
    if hook.settings.public_key is None:
        raise _Unconfigured("webhook.public_key is not set")
    try:
        key = sendgrid.load_public_key(hook.settings.public_key)
    except ValueError as exc:
        raise _Unconfigured(f"webhook.public_key: {exc}") from None
    return sendgrid.verify(headers, body, key, now=hook.now, tolerance=hook.settings.tolerance)


def _mailgun(hook: _Hook, headers: Mapping[str, str], body: bytes) -> bool:
    key = hook.secret("signing_key").encode()
    return mailgun.verify(body, key, now=hook.now, tolerance=hook.settings.tolerance)


def _resend(hook: _Hook, headers: Mapping[str, str], body: bytes) -> bool:
    try:
        key = resend.decode_secret(hook.secret("signing_key"))
    except ValueError as exc:
        raise _Unconfigured(f"webhook.signing_key: {exc}") from None
    return resend.verify(headers, body, key, now=hook.now, tolerance=hook.settings.tolerance)


def _basic(hook: _Hook, headers: Mapping[str, str], body: bytes) -> bool:
    if hook.settings.username is None:
        raise _Unconfigured("webhook.username is not set")
    return basic.verify(headers, hook.settings.username, hook.secret("password"))


# mailer type -> (how its callbacks are checked, how they are read); "ses" is separate.
PROVIDERS: Final[Mapping[str, tuple[Verify, Callable[..., list[ProviderEvent]]]]] = (
    MappingProxyType(
        {
            "sendgrid": (_sendgrid, sendgrid.parse),
            "mailgun": (_mailgun, mailgun.parse),
            "resend": (_resend, resend.parse),
            "postmark": (_basic, postmark.parse),
            "brevo": (_basic, brevo.parse),
            "mailjet": (_basic, mailjet.parse),
            "sparkpost": (_basic, sparkpost.parse),
            "sendlayer": (_basic, sendlayer.parse),
        }
    )
)


async def handle_webhook(
    mailer: HookedMailer,
    headers: Mapping[str, str],
    body: bytes,
    store: HookStore,
    clock: Clock,
    *,
    certificates: sns.CertificateSource | None = None,
    environ: Mapping[str, str] | None = None,
) -> Response:
    """The HTTP status and JSON body for one callback to ``mailer``'s hook.
    ``certificates``: where SNS signing certificates come from (a long-lived
    ``SnsCertificates`` caches them); ``environ`` is read for ``*_env`` settings."""
    settings = mailer.webhook
    known = mailer.type in PROVIDERS or mailer.type == "ses"
    if settings is None or not known:
        return 404, {"error": f"mailer {mailer.name!r} takes no webhooks"}
    hook = _Hook(settings, os.environ if environ is None else environ, clock.time())
    try:
        if mailer.type == "ses":
            return await _ses(mailer, hook, body, store, certificates or sns.SnsCertificates())
        verify, parse = PROVIDERS[mailer.type]
        if not verify(hook, headers, body):
            return _refused(mailer)
        return await _record(mailer.name, parse(body, now=hook.now), store, hook.now)
    except _Unconfigured as exc:
        _log.error("webhook for mailer %s cannot be checked: %s", mailer.name, exc)
        return 503, {"error": f"the webhook of mailer {mailer.name!r} is not configured"}
    except PayloadError as exc:
        return 400, {"error": str(exc), "field": "body"}
    except StoreError as exc:
        _log.warning("webhook for mailer %s not recorded: %s", mailer.name, exc)
        return 503, {"error": "the store is unavailable; try again later"}


def _refused(mailer: HookedMailer) -> Response:
    _log.warning("webhook for mailer %s refused: the signature does not verify", mailer.name)
    return 401, {"error": "the request is not signed or authenticated as configured"}


async def _ses(
    mailer: HookedMailer,
    hook: _Hook,
    body: bytes,
    store: HookStore,
    certificates: sns.CertificateSource,
) -> Response:
    message = ses.envelope(body)
    topic = str(message.get("TopicArn"))
    topics = hook.settings.sns_topics
    if not await sns.verify(message, certificates, now=hook.now) or (
        topics and topic not in topics
    ):
        return _refused(mailer)
    kind = message["Type"]
    if kind == "SubscriptionConfirmation":
        # Not followed by us: an operator confirms, so no callback can make us fetch a URL.
        url = str(message.get("SubscribeURL"))
        _log.warning(
            "mailer %s: SNS topic %s asks to confirm the subscription: visit %s",
            mailer.name,
            topic,
            url,
        )
        return 200, {"subscription_confirmation": {"topic": topic, "subscribe_url": url}}
    if kind != "Notification":
        return 200, {"received": 0, "matched": 0, "type": kind}
    return await _record(mailer.name, ses.parse(message, now=hook.now), store, hook.now)


async def _record(
    mailer: str, events: list[ProviderEvent], store: HookStore, now: float
) -> Response:
    matched = 0
    for event in events:
        record = ProviderEventRecord(
            mailer=mailer,
            provider_id=event.provider_message_id,
            recipient=event.recipient,
            status=event.status.value,
            kind=event.kind,
            at=event.at,
            detail=event.detail,
            received_at=now,
        )
        message_id = await store.record_provider_event(record)
        if message_id is not None:
            matched += 1
        await _suppress(store, record, message_id, now)
    return 200, {"received": len(events), "matched": matched}


async def _suppress(
    store: HookStore, record: ProviderEventRecord, message_id: str | None, now: float
) -> None:
    """A provider's bounce suppresses the address for everyone; a complaint, for the
    domain of the sender complained about (postroom's own, when the message is known)."""
    if record.status == EventStatus.BOUNCED:
        reason, scope = SuppressionReason.HARD_BOUNCE, GLOBAL_SCOPE
    elif record.status == EventStatus.COMPLAINED:
        message = await store.message(message_id) if message_id is not None else None
        sender = message.sender if message is not None else ""
        reason, scope = SuppressionReason.COMPLAINT, sender.rpartition("@")[2].lower()
    else:
        return
    entry = Suppression(
        address=record.recipient.lower(),
        scope=scope,
        reason=reason,
        source=f"provider {record.mailer}",
        created_at=now,
        detail=record.detail or record.kind,
    )
    await store.add_suppression(entry)

"""Configured mailers -> ``Mailer`` objects: one builder per ``type``.

``BUILDERS`` is a plain table, complete at import and changed by nobody at run time; a
new mailer type adds one line here.
``MailerDeps`` holds what mailers may need from the composition root.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Protocol

from postroom.clock import Clock
from postroom.config.mailers import (
    CaptureMailerSettings,
    LocalMailerSettings,
    MxMailerSettings,
    ProviderSettings,
    SmtpMailerSettings,
)
from postroom.config.providers import (
    BrevoMailerSettings,
    GmailMailerSettings,
    MailgunMailerSettings,
    MailjetMailerSettings,
    OutlookMailerSettings,
    PostmarkMailerSettings,
    ProviderMailerSettings,
    ResendMailerSettings,
    SendgridMailerSettings,
    SendlayerMailerSettings,
    SesMailerSettings,
    SmtpcomMailerSettings,
    SparkpostMailerSettings,
    ZohoMailerSettings,
)
from postroom.delivery.mailers import Mailer
from postroom.delivery.mailers.mta.capture import CaptureMailer
from postroom.delivery.mailers.mta.local import LocalMailer
from postroom.delivery.mailers.mta.mx import MxMailer
from postroom.delivery.mailers.mta.relay import SmtpMailer
from postroom.delivery.slots import SharedSlots
from postroom.errors import ConfigError
from postroom.mailbox import MailDrop
from postroom.resolver import Resolver
from postroom.store.base import LimitStore

__all__ = ["BUILDERS", "AnyMailerSettings", "Builder", "MailerDeps", "build_mailer"]

AnyMailerSettings = (
    MxMailerSettings
    | SmtpMailerSettings
    | LocalMailerSettings
    | CaptureMailerSettings
    | ProviderSettings
)


@dataclass(frozen=True, slots=True)
class MailerDeps:
    resolver: Resolver
    hostname: str  # our name in EHLO
    clock: Clock
    rng: random.Random
    data_dir: Path
    mailboxes: MailDrop | None = None  # the server's, so deliveries wake its watchers
    # The store's shared limits (sending limits, connection slots): every node counts in
    # them. None: each mailer counts in its own process (``postroom mailer test``).
    limits: LimitStore | None = None
    slots: SharedSlots | None = None


Builder = Callable[[AnyMailerSettings, MailerDeps], Mailer]


def _mx(settings: AnyMailerSettings, deps: MailerDeps) -> Mailer:
    assert isinstance(settings, MxMailerSettings)
    return MxMailer(
        settings,
        resolver=deps.resolver,
        hostname=deps.hostname,
        clock=deps.clock,
        rng=deps.rng,
        slots=deps.slots,
    )


def _local(settings: AnyMailerSettings, deps: MailerDeps) -> Mailer:
    assert isinstance(settings, LocalMailerSettings)
    return LocalMailer(settings, data_dir=deps.data_dir, clock=deps.clock, mailbox=deps.mailboxes)


def _capture(settings: AnyMailerSettings, deps: MailerDeps) -> Mailer:
    assert isinstance(settings, CaptureMailerSettings)
    return CaptureMailer(settings)


def _smtp(settings: AnyMailerSettings, deps: MailerDeps) -> Mailer:
    assert isinstance(settings, SmtpMailerSettings)
    return SmtpMailer(settings, hostname=deps.hostname, clock=deps.clock, slots=deps.slots)


def _provider(name: str) -> Callable[..., Mailer]:
    """A provider's mailer class (``api/<name>.py``), imported when a mailer of its kind
    is built: each brings its HTTP and signing code, which a server that uses none of
    them (or an accept worker, which builds no mailer) should not carry."""
    cls = f"{name.capitalize()}Mailer"

    def make(*args: Any, **kwargs: Any) -> Mailer:
        module = importlib.import_module(f"postroom.delivery.mailers.api.{name}")
        mailer: Mailer = getattr(module, cls)(*args, **kwargs)
        return mailer

    return make


class _ApiMailer(Protocol):
    def __call__(self, settings: Any, *, clock: Clock, limits: LimitStore | None) -> Mailer: ...


def _api(mailer: _ApiMailer, kind: type[ProviderMailerSettings]) -> Builder:
    """The builder for a provider API mailer: settings of ``kind`` and the clock."""

    def build(settings: AnyMailerSettings, deps: MailerDeps) -> Mailer:
        assert isinstance(settings, kind)
        return mailer(settings, clock=deps.clock, limits=deps.limits)

    return build


class _OAuthApiMailer(Protocol):
    def __call__(
        self, settings: Any, *, clock: Clock, data_dir: Path, limits: LimitStore | None
    ) -> Mailer: ...


def _oauth_api(mailer: _OAuthApiMailer, kind: type[ProviderMailerSettings]) -> Builder:
    """The builder for a mailer that sends with OAuth: its tokens are in the data directory."""

    def build(settings: AnyMailerSettings, deps: MailerDeps) -> Mailer:
        assert isinstance(settings, kind)
        return mailer(settings, clock=deps.clock, data_dir=deps.data_dir, limits=deps.limits)

    return build


BUILDERS: Final[Mapping[str, Builder]] = MappingProxyType(
    {
        "mx": _mx,
        "smtp": _smtp,
        "local": _local,
        "capture": _capture,
        "sendgrid": _api(_provider("sendgrid"), SendgridMailerSettings),
        "mailgun": _api(_provider("mailgun"), MailgunMailerSettings),
        "postmark": _api(_provider("postmark"), PostmarkMailerSettings),
        "sparkpost": _api(_provider("sparkpost"), SparkpostMailerSettings),
        "ses": _api(_provider("ses"), SesMailerSettings),
        "brevo": _api(_provider("brevo"), BrevoMailerSettings),
        "resend": _api(_provider("resend"), ResendMailerSettings),
        "sendlayer": _api(_provider("sendlayer"), SendlayerMailerSettings),
        "smtpcom": _api(_provider("smtpcom"), SmtpcomMailerSettings),
        "mailjet": _api(_provider("mailjet"), MailjetMailerSettings),
        "gmail": _oauth_api(_provider("gmail"), GmailMailerSettings),
        "outlook": _oauth_api(_provider("outlook"), OutlookMailerSettings),
        "zoho": _oauth_api(_provider("zoho"), ZohoMailerSettings),
    }
)


def build_mailer(
    settings: AnyMailerSettings, deps: MailerDeps, builders: Mapping[str, Builder] = BUILDERS
) -> Mailer:
    """The mailer for one ``[[mailers]]`` entry; ``ConfigError`` for an unknown type or bad
    settings (e.g. ``password_env`` naming an unset variable)."""
    builder = builders.get(settings.type)
    if builder is None:
        raise ConfigError(f"mailers.{settings.name}.type", f"no mailer of type {settings.type!r}")
    return builder(settings, deps)

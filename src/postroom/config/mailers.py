"""``[[mailers]]``: a discriminated union on ``type``; provider API types are in ``providers``."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from postroom.config.providers import (
    BrevoMailerSettings,
    GmailMailerSettings,
    MailgunMailerSettings,
    MailjetMailerSettings,
    OutlookMailerSettings,
    PostmarkMailerSettings,
    ResendMailerSettings,
    SendgridMailerSettings,
    SendlayerMailerSettings,
    SesMailerSettings,
    SmtpcomMailerSettings,
    SparkpostMailerSettings,
    ZohoMailerSettings,
)

__all__ = [
    "CaptureMailerSettings",
    "LocalMailerSettings",
    "MailerSettings",
    "MxMailerSettings",
    "ProviderSettings",
    "SmtpMailerSettings",
    "SmtpTls",
    "default_mailers",
]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Mailer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: Annotated[str, Field(pattern=_NAME)]
    timeout: Annotated[float, Field(gt=0)] = 300.0  # per SMTP command (RFC 5321 4.5.3.2)
    connect_timeout: Annotated[float, Field(gt=0)] = 30.0


class MxMailerSettings(_Mailer):
    """Direct delivery to each recipient domain's MX hosts."""

    type: Literal["mx"] = "mx"
    port: Annotated[int, Field(ge=1, le=65535)] = 25
    # Domains whose mail must only leave over TLS (with a valid certificate); others get
    # opportunistic STARTTLS without certificate checks (RFC 7435).
    require_tls: tuple[str, ...] = ()
    max_per_destination: Annotated[int, Field(ge=1)] = 20
    max_connections: Annotated[int, Field(ge=1)] = 100  # all destinations together
    max_messages_per_connection: Annotated[int, Field(ge=1)] = 100
    idle_timeout: Annotated[float, Field(gt=0)] = 10.0  # an unused cached connection is closed
    # Addresses tried per domain and attempt, over all MX hosts (Postfix smtp_mx_address_limit).
    max_addresses: Annotated[int, Field(ge=1)] = 5
    ipv6: bool = True
    ca_file: str | None = None  # for require_tls domains: trust these CAs instead of the system's
    chunking: bool = True  # BDAT instead of DATA where CHUNKING is offered (RFC 3030)


class SmtpTls(StrEnum):
    STARTTLS = "starttls"
    IMPLICIT = "implicit"
    NONE = "none"


class SmtpMailerSettings(_Mailer):
    """A relay or smarthost ("Other SMTP")."""

    type: Literal["smtp"] = "smtp"
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 587
    tls: SmtpTls = SmtpTls.STARTTLS
    username: str | None = None
    password: str | None = None
    password_env: str | None = None  # read the password from this environment variable
    verify: bool = True  # check the relay's certificate and name
    ca_file: str | None = None  # trust these CAs instead of the system's
    max_connections: Annotated[int, Field(ge=1)] = 20
    max_messages_per_connection: Annotated[int, Field(ge=1)] = 100
    idle_timeout: Annotated[float, Field(gt=0)] = 10.0  # an unused cached connection is closed
    chunking: bool = True  # BDAT instead of DATA where CHUNKING is offered (RFC 3030)


class LocalMailerSettings(_Mailer):
    """Delivery for our local domains into Maildir (``<data_dir>/mail/<domain>/<user>/Maildir``)."""

    type: Literal["local"] = "local"


class CaptureMailerSettings(_Mailer):
    """Keeps each message instead of sending it (development): see it in the dashboard
    or through the API. Route everything to it while developing."""

    type: Literal["capture"] = "capture"


# Provider API mailers (config/providers.py): one class per ``type``.
ProviderSettings = (
    SendgridMailerSettings
    | MailgunMailerSettings
    | PostmarkMailerSettings
    | SparkpostMailerSettings
    | SesMailerSettings
    | BrevoMailerSettings
    | ResendMailerSettings
    | SendlayerMailerSettings
    | SmtpcomMailerSettings
    | MailjetMailerSettings
    | GmailMailerSettings
    | OutlookMailerSettings
    | ZohoMailerSettings
)

MailerSettings = Annotated[
    MxMailerSettings
    | SmtpMailerSettings
    | LocalMailerSettings
    | CaptureMailerSettings
    | ProviderSettings,
    Field(discriminator="type"),
]


def default_mailers() -> tuple[MxMailerSettings | SmtpMailerSettings | LocalMailerSettings, ...]:
    return (LocalMailerSettings(name="local"), MxMailerSettings(name="mx"))

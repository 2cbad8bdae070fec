"""What comes back from sent mail: ``[bounces]`` (returned mail), ``[tracking]`` (opens,
clicks and List-Unsubscribe), ``[[alerts]]`` and ``[report]``."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from postroom.config.routes import SettingError

__all__ = [
    "AlertFormat",
    "AlertKind",
    "AlertSettings",
    "BounceSettings",
    "ReportSettings",
    "TrackingSettings",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BounceSettings(_Model):
    # VERP: mail from a non-null sender leaves with the return path
    # <prefix>+<signed queue id>@<domain>, so what comes back names the message.
    verp: bool = False
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,32}$")] = "bounces"
    # The return path's domain (its MX must be this server); None: the sender's domain.
    domain: str | None = None
    # Hard bounces (5.0.x, 5.1.x, 5.2.x but full mailboxes) suppress the address.
    suppress: bool = True
    # Returned mail read at most this far (a bounce with a big attachment is cut).
    max_size: Annotated[int, Field(ge=4096)] = 1024 * 1024


class TrackingSettings(_Model):
    # The URL the /t/... links start with, as readers reach the HTTP API
    # ("https://mail.example.com"); None: http://<hostname>:<api.port>.
    base_url: Annotated[str, Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")] | None = None
    # Tracking for messages that do not ask (X-Postroom-Track, the API's "track"):
    # "no", "opens", "clicks", "opens,clicks".
    default: str = "no"
    # List-Unsubscribe (RFC 8058 one-click) for messages that do not ask.
    unsubscribe: bool = False
    # Fetches this soon after delivery are a scanner's, flagged "machine".
    machine_window: Annotated[float, Field(ge=0)] = 10.0

    @field_validator("base_url", mode="after")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value is not None else None


class AlertKind(StrEnum):
    BOUNCED = "bounced"  # a message bounced
    EXPIRED = "expired"  # a message expired in the queue
    MAILER_FAILING = "mailer_failing"  # a mailer's attempts failed for `failing_for`
    BOUNCE_RATE = "bounce_rate"  # the bounce rate over `window` passed `bounce_rate`
    DNS = "dns"  # a domain check (SPF, DKIM, DMARC, MX) turned bad


class AlertFormat(StrEnum):
    EMAIL = "email"
    WEBHOOK = "webhook"  # a JSON object
    SLACK = "slack"
    TEAMS = "teams"
    DISCORD = "discord"


class AlertSettings(_Model):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    format: AlertFormat
    url: str | None = None  # the incoming webhook's URL (all formats but email)
    url_env: str | None = None  # or the environment variable holding it (a secret)
    to: tuple[str, ...] = ()  # email: the addresses
    sender: str | None = None  # email: the From and envelope sender; None: postmaster@hostname
    on: tuple[AlertKind, ...] = tuple(AlertKind)
    # A kind of alert about one subject (a mailer, a domain) is sent at most once per
    # `quiet` seconds, and at most `burst` alerts per hour in all; the rest are counted
    # and named in the next alert.
    quiet: Annotated[float, Field(ge=0)] = 3600.0
    burst: Annotated[int, Field(ge=1)] = 10
    failing_for: Annotated[float, Field(gt=0)] = 600.0  # mailer_failing: seconds
    bounce_rate: Annotated[float, Field(gt=0, le=1)] = 0.05  # bounce_rate: the share
    window: Annotated[float, Field(gt=0)] = 3600.0  # bounce_rate: over this many seconds
    min_messages: Annotated[int, Field(ge=1)] = 20  # bounce_rate: not judged below this
    secret: SecretStr | None = None  # webhook: sent as a Bearer token

    @field_validator("to", mode="after")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            if "@" not in address:
                raise ValueError(f"{address!r} is not an email address")
        return value

    @model_validator(mode="after")
    def _destination(self) -> AlertSettings:
        if self.format is AlertFormat.EMAIL and not self.to:
            raise SettingError(("to",), "an email alert needs at least one address in to")
        if self.format is not AlertFormat.EMAIL and not (self.url or self.url_env):
            raise SettingError(("url",), f"a {self.format.value} alert needs url or url_env")
        return self


class ReportSettings(_Model):
    enabled: bool = False
    to: tuple[str, ...] = ()
    sender: str | None = None  # None: postmaster@hostname
    every: Annotated[float, Field(ge=3600)] = 7 * 86400.0  # seconds between reports

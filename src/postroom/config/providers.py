"""``[[mailers]]`` that send through a provider's HTTP API.

Every provider mailer shares ``ProviderMailerSettings``: ``base_url`` (the provider's real
endpoint by default; tests and proxies point it elsewhere), the secret (``api_key``
in the file, or ``api_key_env`` naming an environment variable; a ``SecretStr`` so it
never shows in a repr, a log line or ``route explain``), HTTP timeouts, and sending
``limits`` with what a message over them does (``over_limit``: wait in the queue, or
fail over to the next mailer in the chain). The secret is read by the mailer at
start-up, not here: configuration does no I/O.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from postroom.config.webhooks import WebhookSettings

__all__ = [
    "MAILER_NAME",
    "BrevoMailerSettings",
    "GmailMailerSettings",
    "MailgunMailerSettings",
    "MailjetMailerSettings",
    "OAuthMailerSettings",
    "OutlookMailerSettings",
    "OverLimit",
    "PostmarkMailerSettings",
    "ProviderMailerSettings",
    "Region",
    "ResendMailerSettings",
    "SendLimits",
    "SendgridMailerSettings",
    "SendlayerMailerSettings",
    "SesMailerSettings",
    "SmtpcomMailerSettings",
    "SparkpostMailerSettings",
    "ZohoMailerSettings",
    "ZohoRegion",
]

MAILER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OverLimit(StrEnum):
    WAIT = "wait"  # the message stays queued until the window ends
    FAILOVER = "failover"  # the next mailer in the route's chain tries it now


class SendLimits(_Model):
    """Messages (API requests) a mailer may send per window; windows are aligned to the
    epoch in UTC, so ``per_day`` matches a provider's daily cap that resets at midnight UTC."""

    per_second: Annotated[int, Field(ge=1)] | None = None
    per_hour: Annotated[int, Field(ge=1)] | None = None
    per_day: Annotated[int, Field(ge=1)] | None = None


class Region(StrEnum):
    US = "us"
    EU = "eu"


class ProviderMailerSettings(_Model):
    name: Annotated[str, Field(pattern=MAILER_NAME)]
    base_url: str
    api_key: SecretStr | None = None
    api_key_env: str | None = None  # read the key from this environment variable at start-up
    timeout: Annotated[float, Field(gt=0)] = 30.0  # for the whole answer to one request
    connect_timeout: Annotated[float, Field(gt=0)] = 10.0
    max_connections: Annotated[int, Field(ge=1)] = 10  # kept open to the API and reused
    limits: SendLimits = SendLimits()
    over_limit: OverLimit = OverLimit.WAIT
    webhook: WebhookSettings | None = None  # POST /hooks/<name>: the provider's event callbacks

    @field_validator("base_url", mode="after")
    @classmethod
    def _base_url(cls, url: str) -> str:
        return _http_url(url)

    @model_validator(mode="after")
    def _one_secret(self) -> ProviderMailerSettings:
        if self.api_key is not None and self.api_key_env is not None:
            raise ValueError("set api_key or api_key_env, not both")
        return self


def _http_url(url: str) -> str:
    """``url`` when it is an http:// or https:// URL with a host; ValueError if not."""
    try:
        parts = urlsplit(url)
        good = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port out of range, a broken IPv6 literal
        good = False
    if not good:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    return url


def _regional(data: Any, urls: dict[str, str]) -> Any:
    """Fill ``base_url`` from ``region`` (a provider's accounts live in one region)."""
    if isinstance(data, dict) and data.get("base_url") is None:
        region = str(data.get("region", "us"))
        url = urls.get(region, "").format(region=region)
        if url:
            return {**data, "base_url": url}
    return data


class SendgridMailerSettings(ProviderMailerSettings):
    type: Literal["sendgrid"] = "sendgrid"
    base_url: str = "https://api.sendgrid.com"


class MailgunMailerSettings(ProviderMailerSettings):
    type: Literal["mailgun"] = "mailgun"
    domain: str  # the sending domain as set up at Mailgun
    region: Region = Region.US
    base_url: str  # from region unless given

    _URLS: ClassVar[dict[str, str]] = {
        "us": "https://api.mailgun.net",
        "eu": "https://api.eu.mailgun.net",
    }

    @model_validator(mode="before")
    @classmethod
    def _region_url(cls, data: Any) -> Any:
        return _regional(data, cls._URLS)


class PostmarkMailerSettings(ProviderMailerSettings):
    type: Literal["postmark"] = "postmark"
    base_url: str = "https://api.postmarkapp.com"
    message_stream: str = "outbound"  # api_key is the server token


class SparkpostMailerSettings(ProviderMailerSettings):
    type: Literal["sparkpost"] = "sparkpost"
    region: Region = Region.US
    base_url: str  # from region unless given
    subaccount: Annotated[int, Field(ge=0)] | None = None

    _URLS: ClassVar[dict[str, str]] = {
        "us": "https://api.sparkpost.com",
        "eu": "https://api.eu.sparkpost.com",
    }

    @model_validator(mode="before")
    @classmethod
    def _region_url(cls, data: Any) -> Any:
        return _regional(data, cls._URLS)


class SesMailerSettings(ProviderMailerSettings):
    """Amazon SES (API v2). ``api_key``/``api_key_env`` hold the secret access key."""

    type: Literal["ses"] = "ses"
    region: Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")]
    base_url: str  # from region unless given
    access_key_id: str | None = None
    access_key_id_env: str | None = None
    configuration_set: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _region_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("base_url") is None and "region" in data:
            return {**data, "base_url": f"https://email.{data['region']}.amazonaws.com"}
        return data

    @model_validator(mode="after")
    def _one_key_id(self) -> SesMailerSettings:
        if self.access_key_id is not None and self.access_key_id_env is not None:
            raise ValueError("set access_key_id or access_key_id_env, not both")
        return self


class BrevoMailerSettings(ProviderMailerSettings):
    type: Literal["brevo"] = "brevo"
    base_url: str = "https://api.brevo.com"


class ResendMailerSettings(ProviderMailerSettings):
    type: Literal["resend"] = "resend"
    base_url: str = "https://api.resend.com"


class MailjetMailerSettings(ProviderMailerSettings):
    """Mailjet Send API v3.1: ``api_key`` is the API key, ``secret_key`` its secret key."""

    type: Literal["mailjet"] = "mailjet"
    base_url: str = "https://api.mailjet.com"
    secret_key: SecretStr | None = None
    secret_key_env: str | None = None


class SendlayerMailerSettings(ProviderMailerSettings):
    type: Literal["sendlayer"] = "sendlayer"
    base_url: str = "https://console.sendlayer.com"


class SmtpcomMailerSettings(ProviderMailerSettings):
    type: Literal["smtpcom"] = "smtpcom"
    base_url: str = "https://api.smtp.com"
    channel: str  # the sender channel every SMTP.com send names


class OAuthMailerSettings(ProviderMailerSettings):
    """A mailer that sends as a user, authorized once with ``postroom mailer authorize``
    (OAuth 2.0). ``auth_url``, ``token_url`` and ``scopes`` default to the provider's."""

    client_id: str
    client_secret: SecretStr | None = None
    client_secret_env: str | None = None
    auth_url: str
    token_url: str
    scopes: tuple[str, ...]
    # Where the provider sends the browser back; nothing need listen there: the user
    # copies the code (or the whole address) from the browser.
    redirect_uri: str = "http://127.0.0.1/"

    @field_validator("auth_url", "token_url", "redirect_uri", mode="after")
    @classmethod
    def _urls(cls, url: str) -> str:
        return _http_url(url)

    @model_validator(mode="after")
    def _oauth_secret(self) -> OAuthMailerSettings:
        if self.api_key is not None or self.api_key_env is not None:
            raise ValueError("this mailer uses OAuth: set client_id and client_secret, not api_key")
        if self.client_secret is not None and self.client_secret_env is not None:
            raise ValueError("set client_secret or client_secret_env, not both")
        return self


def _oauth_urls(data: Any, base: str, fill: dict[str, str]) -> Any:
    """Fill ``base_url``, ``auth_url``, ``token_url`` left out from one value (tenant, region)."""
    if not isinstance(data, dict):
        return data
    filled = {key: url.format(base) for key, url in fill.items() if data.get(key) is None}
    return {**data, **filled}


class GmailMailerSettings(OAuthMailerSettings):
    """Gmail API users.messages.send, as ``user`` ("me": the authorized account)."""

    type: Literal["gmail"] = "gmail"
    base_url: str = "https://gmail.googleapis.com"
    user: str = "me"
    auth_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    token_url: str = "https://oauth2.googleapis.com/token"
    scopes: tuple[str, ...] = ("https://www.googleapis.com/auth/gmail.send",)


class OutlookMailerSettings(OAuthMailerSettings):
    """Microsoft Graph sendMail, as ``user`` ("me": the authorized account)."""

    type: Literal["outlook"] = "outlook"
    base_url: str = "https://graph.microsoft.com"
    user: str = "me"
    tenant: str = "common"  # the Entra tenant id or domain; "common" for any account
    auth_url: str  # from tenant unless given
    token_url: str  # from tenant unless given
    scopes: tuple[str, ...] = ("https://graph.microsoft.com/Mail.Send", "offline_access")

    @model_validator(mode="before")
    @classmethod
    def _tenant_urls(cls, data: Any) -> Any:
        tenant = str(data.get("tenant", "common")) if isinstance(data, dict) else ""
        base = "https://login.microsoftonline.com/{}/oauth2/v2.0/"
        return _oauth_urls(
            data, tenant, {"auth_url": base + "authorize", "token_url": base + "token"}
        )


class ZohoRegion(StrEnum):
    """Zoho's data centres: the domain suffix of the account's servers."""

    COM = "com"
    EU = "eu"
    IN = "in"
    AU = "com.au"
    JP = "jp"
    CA = "ca"
    SA = "sa"
    CN = "com.cn"


class ZohoMailerSettings(OAuthMailerSettings):
    """Zoho Mail API: messages of the account ``account_id`` (from ``GET /api/accounts``)."""

    type: Literal["zoho"] = "zoho"
    account_id: str
    region: ZohoRegion = ZohoRegion.COM
    base_url: str  # https://mail.zoho.<region> unless given
    auth_url: str  # https://accounts.zoho.<region>/oauth/v2/auth unless given
    token_url: str
    scopes: tuple[str, ...] = ("ZohoMail.messages.CREATE",)

    @model_validator(mode="before")
    @classmethod
    def _region_urls(cls, data: Any) -> Any:
        region = str(data.get("region", "com")) if isinstance(data, dict) else ""
        if region not in {r.value for r in ZohoRegion}:
            return data  # the region's own error says what is wrong
        accounts = "https://accounts.zoho.{}/oauth/v2/"
        fill = {
            "base_url": "https://mail.zoho.{}",
            "auth_url": accounts + "auth",
            "token_url": accounts + "token",
        }
        return _oauth_urls(data, region, fill)

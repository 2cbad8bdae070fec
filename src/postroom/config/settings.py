"""The settings tree: frozen pydantic models. Every default lives here and nowhere else.

``docs/configuration.md`` and ``postroom.example.toml`` describe each key; a test
checks that they name every key defined here.
"""

from __future__ import annotations

import ipaddress
import platform
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from postroom.config.eventhooks import WebhookTarget
from postroom.config.feedback import (
    AlertSettings,
    BounceSettings,
    ReportSettings,
    TrackingSettings,
)
from postroom.config.mailers import MailerSettings, default_mailers
from postroom.config.routes import RouteSettings, SettingError
from postroom.mail.address import parse_domain, to_ascii_domain

__all__ = [
    "IMAP_ROLES",
    "IMPLICIT_TLS_ROLES",
    "POP3_ROLES",
    "SMTP_ROLES",
    "ApiSettings",
    "AuthThrottleSettings",
    "DashboardSettings",
    "DeliverySettings",
    "DnsSettings",
    "InboundAuthSettings",
    "LimitSettings",
    "ListenerRole",
    "ListenerSettings",
    "LogSettings",
    "MailboxSettings",
    "RetentionSettings",
    "SenderSettings",
    "SendersSettings",
    "Settings",
    "TlsSettings",
    "default_listeners",
    "parse_size",
]

MIB = 1024 * 1024


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ListenerRole(StrEnum):
    MX = "mx"  # port 25 style: mail for our domains; relay only for authenticated users
    SUBMISSION = "submission"  # port 587 style: STARTTLS, AUTH required before MAIL
    SUBMISSIONS = "submissions"  # port 465 style: implicit TLS, AUTH required (RFC 8314)
    POP3 = "pop3"  # port 110 style: POP3, STLS before login (RFC 2595)
    POP3S = "pop3s"  # port 995 style: POP3 over implicit TLS (RFC 8314)
    IMAP = "imap"  # port 143 style: IMAP, STARTTLS before login (RFC 3501 6.2.1)
    IMAPS = "imaps"  # port 993 style: IMAP over implicit TLS (RFC 8314)


SMTP_ROLES = frozenset({ListenerRole.MX, ListenerRole.SUBMISSION, ListenerRole.SUBMISSIONS})
POP3_ROLES = frozenset({ListenerRole.POP3, ListenerRole.POP3S})
IMAP_ROLES = frozenset({ListenerRole.IMAP, ListenerRole.IMAPS})
IMPLICIT_TLS_ROLES = frozenset({ListenerRole.SUBMISSIONS, ListenerRole.POP3S, ListenerRole.IMAPS})


class ListenerSettings(_Model):
    address: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)]
    role: ListenerRole
    # POP3 (and IMAP) logins without TLS; only on a loopback address, where nothing
    # travels over a network (a local webmail or a test client).
    plaintext_login: bool = False

    @model_validator(mode="after")
    def _plaintext_only_on_loopback(self) -> ListenerSettings:
        if self.plaintext_login and not _is_loopback(self.address):
            raise SettingError(
                ("plaintext_login",),
                f"plaintext_login is allowed only on a loopback address, not {self.address}",
            )
        return self


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def default_listeners() -> tuple[ListenerSettings, ...]:
    return (
        ListenerSettings(port=2525, role=ListenerRole.MX),
        ListenerSettings(port=2587, role=ListenerRole.SUBMISSION),
        ListenerSettings(port=2465, role=ListenerRole.SUBMISSIONS),
        ListenerSettings(port=2110, role=ListenerRole.POP3),
        ListenerSettings(port=2995, role=ListenerRole.POP3S),
        ListenerSettings(port=2143, role=ListenerRole.IMAP),
        ListenerSettings(port=2993, role=ListenerRole.IMAPS),
    )


def parse_size(text: str | int) -> int:
    """Octets from ``1048576``, ``"500M"``, ``"1G"`` (K, M, G, T: powers of 1024);
    ``ValueError`` otherwise."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"{text} is not a size")
        return text
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = 1
    if value[-1:] in _SIZE_UNITS:
        scale, value = _SIZE_UNITS[value[-1]], value[:-1]
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{text!r} is not a size (say 1048576, 500M or 1G)") from None
    if not 0 <= number * scale <= 2**62:  # NaN fails both
        raise ValueError(f"{text!r} is not a size (say 1048576, 500M or 1G)")
    return int(number * scale)


_SIZE_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


class TlsSettings(_Model):
    # Empty: a self-signed certificate is made in <data_dir>/tls on first start.
    cert: Path | None = None
    key: Path | None = None
    min_version: Annotated[str, Field(pattern=r"^1\.[23]$")] = "1.2"

    @model_validator(mode="after")
    def _both_or_neither(self) -> TlsSettings:
        if (self.cert is None) != (self.key is None):
            raise ValueError("set both tls.cert and tls.key, or neither")
        return self


class AuthThrottleSettings(_Model):
    """AUTH failures per client address and per account: past ``max_failures`` from one
    client (``max_account_failures`` at one account) within ``window`` seconds, AUTH gets
    ``454 4.7.0`` without a password check until the window has passed."""

    max_failures: Annotated[int, Field(ge=1)] = 5
    max_account_failures: Annotated[int, Field(ge=1)] = 10
    window: Annotated[float, Field(gt=0)] = 300.0


class LoginCacheSettings(_Model):
    """Recent successful logins kept in memory (a keyed digest of the stored hash and the
    password), so a client logging in on every connection skips argon2id for ``ttl``
    seconds; a changed or removed password is refused at once. ``entries = 0``: off."""

    ttl: Annotated[float, Field(ge=0)] = 300.0
    entries: Annotated[int, Field(ge=0)] = 10_000


class LimitSettings(_Model):
    max_message_size: Annotated[int, Field(ge=1024)] = 25 * MIB
    max_recipients: Annotated[int, Field(ge=1)] = 100
    max_line_length: Annotated[int, Field(ge=512)] = 2048  # command lines, CRLF included
    # A deadline for each whole command line, however it trickles in (RFC 5321 4.5.3.2).
    command_timeout: Annotated[float, Field(gt=0)] = 300.0
    data_timeout: Annotated[float, Field(gt=0)] = 600.0  # RFC 5321 4.5.3.2.6: 10 minutes
    # Message content (DATA, BDAT) must arrive within data_grace + size / min_data_rate
    # seconds of its start (Postfix's smtpd_min_data_rate); 0: no rate, only data_timeout.
    min_data_rate: Annotated[int, Field(ge=0)] = 500
    data_grace: Annotated[float, Field(gt=0)] = 60.0
    max_connections: Annotated[int, Field(ge=1)] = 1000
    max_connections_per_ip: Annotated[int, Field(ge=1)] = 50
    max_errors: Annotated[int, Field(ge=1)] = 10
    shutdown_grace: Annotated[float, Field(ge=0)] = 30.0
    auth: AuthThrottleSettings = AuthThrottleSettings()
    spool_memory: Annotated[int, Field(ge=0)] = 256 * 1024  # body bytes kept in memory


class DatabaseSettings(_Model):
    """How the store keeps what it holds (the engine is ``storage``'s URL)."""

    # PostgreSQL: a body (trace headers included) above this many bytes is stored as a
    # large object instead of in its row; SQLite keeps every body in its row.
    inline_body_max: Annotated[int, Field(ge=0)] = MIB
    # PostgreSQL: seconds a call to the database (a batch of writes, a read, connecting)
    # may go unanswered before the node gives up on its connection and answers 451/503.
    timeout: Annotated[float, Field(ge=1.0, le=300.0)] = 5.0


class MailboxSettings(_Model):
    """Local users' mailboxes, as POP3 (and IMAP) serve them."""

    # Octets a user's mailbox may hold unless `postroom user quota` set theirs; 0: no limit.
    # A number, or a string such as "1G" or "500M".
    default_quota: Annotated[int, Field(ge=0)] = 0
    pop3_idle_timeout: Annotated[float, Field(gt=0)] = 600.0  # RFC 1939 3: 10 minutes
    imap_autologout: Annotated[float, Field(gt=0)] = 1800.0  # RFC 3501 5.4: 30 minutes
    # How often a folder someone waits on is checked for changes made by other processes.
    poll_interval: Annotated[float, Field(gt=0)] = 1.0

    @field_validator("default_quota", mode="before")
    @classmethod
    def _size(cls, value: object) -> object:
        return parse_size(value) if isinstance(value, str) else value


class LogSettings(_Model):
    level: Annotated[str, Field(pattern=r"^(?i:debug|info|warning|error)$")] = "info"
    file: Path | None = None  # None: standard error
    format: Literal["text", "json"] = "text"  # json: one object a line, for log shippers


class DnsSettings(_Model):
    """Resolvers for MX/A/AAAA lookups; empty: the system's (/etc/resolv.conf)."""

    nameservers: tuple[str, ...] = ()  # "address" or "address:port", e.g. "127.0.0.1:5353"
    timeout: Annotated[float, Field(gt=0)] = 10.0


class DeliverySettings(_Model):
    """The scheduler and its retry policy (defaults as Postfix's)."""

    first_retry: Annotated[float, Field(gt=0)] = 300.0  # minimal_backoff_time: 5 min
    max_retry: Annotated[float, Field(gt=0)] = 4000.0  # maximal_backoff_time: ~67 min
    lifetime: Annotated[float, Field(gt=0)] = 5 * 86400.0  # maximal_queue_lifetime: 5 d
    delay_warning: Annotated[float, Field(ge=0)] = 4 * 3600.0  # 0: no delay warnings
    max_concurrency: Annotated[int, Field(ge=1)] = 100  # messages in flight in total
    # A claim not settled by then is retried; renewed every third of it while the attempt
    # runs, so it bounds only how long a crashed node's recipients wait.
    lease: Annotated[float, Field(gt=0)] = 60.0
    # Message bytes held in memory by attempts in flight; more attempts wait their turn.
    max_inflight_bytes: Annotated[int, Field(ge=1024 * 1024)] = 64 * MIB
    # The public addresses receivers see our mail come from (after any NAT); not bound to,
    # only checked by `postroom domain check`. Empty: the system's outbound address.
    sending_addresses: tuple[str, ...] = ()
    # Deliver nothing (maintenance, benchmarks): mail is still accepted and queued, and
    # is delivered once the server runs with paused = false again.
    paused: bool = False
    # Mail for local users is delivered by the process that accepted it, right after the
    # commit that makes it durable (under a lease; the scheduler takes over what that
    # process leaves unsettled). false: the scheduler delivers all mail.
    local_at_once: bool = True
    # Mail whose route names only ``smtp`` mailers (a relay or smarthost) is handed on by
    # the process that accepted it, the same way: no trip through the queue; every
    # outcome is settled by the scheduler's rules, and each relay's max_connections
    # holds across the processes. false: the scheduler relays all mail.
    relay_at_once: bool = True

    @field_validator("sending_addresses", mode="after")
    @classmethod
    def _ip_addresses(cls, addresses: tuple[str, ...]) -> tuple[str, ...]:
        return _each(addresses, lambda text: str(ipaddress.ip_address(text)), "an IP address")


class InboundAuthSettings(_Model):
    """SPF, DKIM and DMARC checks on mail from unauthenticated clients at mx listeners.

    ``enabled`` writes the Authentication-Results header; the two refusals are opt-in."""

    enabled: bool = True
    dmarc_reject: bool = False  # a DMARC fail under p=reject: 550 5.7.1 at end of DATA
    temperror_defer: bool = False  # a DNS failure during the checks: 451 4.7.5


class RetentionSettings(_Model):
    """How long finished messages (bodies and log entries) are kept; ``bodies_days``
    drops the bodies sooner and keeps the log (envelope, attempts) until ``days``."""

    days: Annotated[float, Field(gt=0)] = 30.0
    bodies_days: Annotated[float, Field(gt=0)] | None = None  # None: as long as `days`
    interval: Annotated[float, Field(gt=0)] = 3600.0  # how often cleanup runs (seconds)

    @model_validator(mode="after")
    def _bodies_within_days(self) -> RetentionSettings:
        if self.bodies_days is not None and self.bodies_days > self.days:
            raise SettingError(
                ("bodies_days",), f"must not be more than retention.days ({self.days:g})"
            )
        return self


class ApiSettings(_Model):
    """The HTTP API, served inside `postroom serve` (port 0: any free port)."""

    enabled: bool = True
    address: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8025
    # Requests per minute per API key (0: no limit), and how many may come at once.
    rate_limit: Annotated[int, Field(ge=0)] = 600
    burst: Annotated[int, Field(ge=1)] = 60
    # Request bodies parsed whole (JSON, webhook events) held in memory at once; a body that
    # would pass it gets 503 + Retry-After unread. Raw messages go to the spool instead.
    max_inflight_bytes: Annotated[int, Field(ge=1024 * 1024)] = 64 * MIB


class DashboardSettings(_Model):
    """The dashboard, served by the API's server under /dashboard/ while an admin exists
    (`postroom admin add NAME`)."""

    enabled: bool = True
    # A session ends after this long without a request, and after session_max_age anyway.
    idle_timeout: Annotated[float, Field(gt=0)] = 1800.0
    session_max_age: Annotated[float, Field(gt=0)] = 12 * 3600.0


class SenderSettings(_Model):
    """The sender domains of a principal that is not in the directory (a local Unix user,
    a trusted network): the local domains, these, or any domain."""

    sender_domains: tuple[str, ...] = ()  # besides the local domains; stored as A-labels
    any_sender: bool = False

    @field_validator("sender_domains", mode="after")
    @classmethod
    def _domains(cls, domains: tuple[str, ...]) -> tuple[str, ...]:
        found = _each(
            domains, lambda text: to_ascii_domain(parse_domain(text.strip())), "a domain name"
        )
        return tuple(dict.fromkeys(found))


class SendersSettings(_Model):
    """Who may send as whom, for the principals the directory does not hold."""

    sendmail: SenderSettings = SenderSettings()  # postroom-sendmail and `postroom send`
    relay_networks: SenderSettings = SenderSettings()  # clients in relay_networks


class Settings(_Model):
    hostname: str = Field(default_factory=lambda: platform.node() or "localhost")
    data_dir: Path = Path("postroom-data")
    storage: str | None = None  # None: sqlite:///<data_dir>/postroom.db
    database: DatabaseSettings = DatabaseSettings()
    listeners: tuple[ListenerSettings, ...] = Field(default_factory=default_listeners)
    tls: TlsSettings = TlsSettings()
    limits: LimitSettings = LimitSettings()
    log: LogSettings = LogSettings()
    mailboxes: MailboxSettings = MailboxSettings()
    dns: DnsSettings = DnsSettings()
    delivery: DeliverySettings = DeliverySettings()
    retention: RetentionSettings = RetentionSettings()
    api: ApiSettings = ApiSettings()
    dashboard: DashboardSettings = DashboardSettings()
    inbound_auth: InboundAuthSettings = InboundAuthSettings()
    login_cache: LoginCacheSettings = LoginCacheSettings()
    # Client networks that may relay through mx listeners without AUTH (Postfix's
    # mynetworks), as CIDR; each network is a principal with [senders.relay_networks].
    relay_networks: tuple[str, ...] = ()
    senders: SendersSettings = SendersSettings()
    # [[mailers]] entries add to the built-in "local" and "mx", or replace one by its name.
    mailers: tuple[MailerSettings, ...] = Field(default_factory=default_mailers)
    routes: tuple[RouteSettings, ...] = ()  # tried in order; none matching: the defaults
    bounces: BounceSettings = BounceSettings()
    tracking: TrackingSettings = TrackingSettings()
    alerts: tuple[AlertSettings, ...] = ()
    report: ReportSettings = ReportSettings()
    # Processes accepting SMTP on the same listeners (one also delivers); 1: just one.
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    # Receivers of postroom's events (docs/events.md), each with its filter and secret.
    webhooks: tuple[WebhookTarget, ...] = ()

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.data_dir / 'postroom.db'}"

    @field_validator("relay_networks", mode="after")
    @classmethod
    def _networks(cls, networks: tuple[str, ...]) -> tuple[str, ...]:
        def network(text: str) -> str:
            return str(ipaddress.ip_network(text.strip(), strict=False))

        return _each(networks, network, "an IP network (CIDR)")

    @model_validator(mode="after")
    def _distinct_listeners(self) -> Settings:
        seen: dict[tuple[str, int], int] = {}
        for index, listener in enumerate(self.listeners):
            where = (listener.address, listener.port)
            if listener.port and where in seen:
                taken = f"{listener.address}:{listener.port}"
                raise SettingError(
                    ("listeners", index), f"listeners[{seen[where]}] listens on {taken} already"
                )
            seen[where] = index
        return self

    @field_validator("mailers", mode="after")
    @classmethod
    def _add_to_the_built_in_mailers(
        cls, given: tuple[MailerSettings, ...]
    ) -> tuple[MailerSettings, ...]:
        _check_unique("mailers", [mailer.name for mailer in given])
        by_name = {mailer.name: mailer for mailer in given}
        built_in = tuple(by_name.pop(m.name, m) for m in default_mailers())
        return built_in + tuple(by_name.values())

    @field_validator("webhooks", mode="after")
    @classmethod
    def _distinct_webhooks(cls, webhooks: tuple[WebhookTarget, ...]) -> tuple[WebhookTarget, ...]:
        _check_unique("webhooks", [webhook.name for webhook in webhooks])
        return webhooks

    @field_validator("routes", mode="after")
    @classmethod
    def _distinct_routes(cls, routes: tuple[RouteSettings, ...]) -> tuple[RouteSettings, ...]:
        _check_unique("routes", [route.name for route in routes])
        return routes

    @model_validator(mode="after")
    def _chains_name_mailers(self) -> Settings:
        known = [mailer.name for mailer in self.mailers]
        for index, route in enumerate(self.routes):
            for position, name in enumerate(route.mailers):
                if name not in known:
                    raise SettingError(
                        ("routes", index, "mailers", position),
                        f"no mailer named {name!r} (there are {', '.join(map(repr, known))})",
                    )
        return self


def _each(values: tuple[str, ...], normal: Callable[[str], str], what: str) -> tuple[str, ...]:
    """Each value in its normal form; a SettingError naming the first that is not ``what``."""
    found = []
    for index, text in enumerate(values):
        try:
            found.append(normal(text))
        except ValueError:  # AddressError is one too
            raise SettingError((index,), f"{text!r} is not {what}") from None
    return tuple(found)


def _check_unique(key: str, names: list[str]) -> None:
    for index, name in enumerate(names):
        if name in names[:index]:
            first = names.index(name)
            raise SettingError((index, "name"), f"{name!r} is already the name of {key}[{first}]")

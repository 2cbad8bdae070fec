"""The shared base for provider API mailers, on httpx.

A provider module says how it authenticates (``credentials``), how to build its request
(``request``) and how to read the answer (``read``: the provider's error code, its
words, its message id, recipients it refused); this module does the rest in one place:
one pooled ``httpx.AsyncClient`` per mailer with the configured timeouts, sending
limits, and the policy that turns a transport failure or an HTTP answer into
per-recipient ``Outcome``s through the provider's ``Table``:

    ========== ========================================= ========================
    Verdict     typical answers                           outcome
    ========== ========================================= ========================
    ACCEPTED    2xx                                       delivered, provider id
    TEMPORARY   5xx, 408, timeouts, dropped connections   deferred, failover
    THROTTLED   429 (its retry hint honoured)             deferred, failover, retry_at
    MISCONFIG   401/403, unknown domain or region         deferred, failover, log.error
    REJECTED    invalid or suppressed recipient, content  bounced
    ========== ========================================= ========================

A table maps ``"status:code"``, ``"status"`` or ``"4xx"``-style keys to a ``Rule``; the
most specific key wins. Authentication and configuration errors defer (mail waits
while an operator fixes a key) and are logged loudly with the provider's words, never
the key: the key lives only in the client's default headers (or the request signer),
and this class's ``repr`` names the mailer alone.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, Generic, TypeVar

import httpx

from postroom.clock import Clock
from postroom.config.providers import OverLimit, ProviderMailerSettings
from postroom.config.secrets import MissingSecret, read_secret
from postroom.delivery.mailers.api.limits import SendWindow
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Disposition, Outcome, RemoteInfo
from postroom.errors import ConfigError, StoreError
from postroom.smtp.replies import Reply
from postroom.store.base import LimitStore
from postroom.store.sqlite.limits import LocalLimits

__all__ = [
    "DEFAULT_TABLE",
    "Answer",
    "Credentials",
    "HintKind",
    "HttpMailer",
    "NoAnswer",
    "Reading",
    "Rule",
    "Table",
    "Verdict",
    "classify",
    "environ_or",
    "key_header",
    "regroup",
    "resolve_secret",
    "retry_hint",
    "str_or_none",
    "table",
]

_log = logging.getLogger("postroom.delivery")


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    TEMPORARY = "temporary"
    THROTTLED = "throttled"
    MISCONFIG = "misconfigured"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Rule:
    verdict: Verdict
    enhanced: str  # RFC 3463 code recorded on the attempt


Table = Mapping[str, Rule]

_OK: Final = Rule(Verdict.ACCEPTED, "2.0.0")
_TEMP: Final = Rule(Verdict.TEMPORARY, "4.3.0")
_SLOW: Final = Rule(Verdict.THROTTLED, "4.7.0")
_CONF: Final = Rule(Verdict.MISCONFIG, "4.3.5")  # RFC 3463 X.3.5: system incorrectly configured
_BAD: Final = Rule(Verdict.REJECTED, "5.0.0")

DEFAULT_TABLE: Final[Table] = MappingProxyType(
    {
        "2xx": _OK,
        "401": _CONF,
        "403": _CONF,
        "404": _CONF,  # a wrong base_url, domain or region, not the recipient's fault
        "405": _CONF,
        "406": _CONF,
        "408": _TEMP,
        "415": _CONF,
        "429": _SLOW,
        "413": Rule(Verdict.REJECTED, "5.3.4"),  # message too big for the provider
        "4xx": _BAD,
        "5xx": _TEMP,
    }
)


def table(rules: Mapping[str, Rule]) -> Table:
    """A provider's table: ``DEFAULT_TABLE`` with the provider's own keys over it."""
    return MappingProxyType({**DEFAULT_TABLE, **rules})


_REPLY_CODES: Final[Mapping[Verdict, int]] = MappingProxyType(
    {
        Verdict.ACCEPTED: 250,
        Verdict.TEMPORARY: 451,
        Verdict.THROTTLED: 451,
        Verdict.MISCONFIG: 451,
        Verdict.REJECTED: 550,
    }
)


def classify(table: Table, status: int, code: str | None = None) -> Rule:
    """The most specific rule: ``"422:406"``, then ``"422"``, then ``"4xx"``; an answer
    no key covers (1xx, 3xx: a redirect we do not follow) is temporary."""
    keys = ([f"{status}:{code}"] if code else []) + [str(status), f"{status // 100}xx"]
    for key in keys:
        rule = table.get(key)
        if rule is not None:
            return rule
    return _TEMP


@dataclass(frozen=True, slots=True)
class Answer:
    """A provider's raw answer, as ``postroom mailer test`` shows it."""

    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON, or None (some providers answer errors in plain text)."""
        try:
            return json.loads(self.body)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
            return None

    def fields(self) -> dict[str, Any]:
        """The body as a JSON object; empty when it is anything else."""
        data = self.json()
        return data if isinstance(data, dict) else {}


def str_or_none(value: object) -> str | None:
    """A value an answer gave (an id or a code, a string or a number) as text; None when
    absent."""
    return str(value) if value else None


@dataclass(frozen=True, slots=True)
class Reading:
    """What a provider module reads from an answer."""

    code: str | None = None  # the provider's error code, for the table ("406", "1902", ...)
    text: str = ""  # the provider's words
    provider_id: str | None = None
    # recipients the provider refused inside an answer that covers the others: address -> code
    refused: Mapping[str, str] = field(default_factory=dict)


class HintKind(StrEnum):
    SECONDS = "seconds"  # delay in seconds, or an HTTP date (Retry-After, RFC 9110 10.2.3)
    EPOCH = "epoch"  # a Unix time


def retry_hint(
    headers: Mapping[str, str], kinds: Sequence[tuple[str, HintKind]], now: float
) -> float | None:
    """The wall time a throttled request may be retried at, from the first header present."""
    for name, kind in kinds:
        value = headers.get(name)
        if value is None:
            continue
        value = value.strip()
        try:
            number = float(value)
        except ValueError:
            if kind is HintKind.SECONDS and (when := _http_date(value)) is not None:
                return max(now, when)
            continue
        return max(now, number if kind is HintKind.EPOCH else now + number)
    return None


def resolve_secret(
    settings: ProviderMailerSettings,
    environ: Mapping[str, str],
    *,
    value: str = "api_key",
) -> str:
    """The secret named by ``<value>`` or ``<value>_env``; ``ConfigError`` if neither gives one."""
    given = getattr(settings, value, None)
    variable = getattr(settings, f"{value}_env", None)
    try:
        return read_secret(value, given, variable, environ)
    except MissingSecret as exc:
        raise ConfigError(f"mailers.{settings.name}.{exc.key}", exc.problem) from None


@dataclass(frozen=True, slots=True)
class Credentials:
    """How a provider's requests are authenticated: default headers, or an auth flow."""

    headers: Mapping[str, str] = field(default_factory=dict)
    auth: httpx.Auth | None = None


def key_header(name: str, key: str, scheme: str = "") -> Credentials:
    """An API key in one request header (``scheme`` in front, e.g. ``Bearer``), and JSON
    asked for in answers."""
    value = f"{scheme} {key}" if scheme else key
    return Credentials(headers={name: value, "Accept": "application/json"})


@dataclass(frozen=True, slots=True)
class NoAnswer:
    """A request that got no HTTP answer."""

    enhanced: str
    text: str


SettingsT_co = TypeVar("SettingsT_co", bound=ProviderMailerSettings, covariant=True)


class HttpMailer(Generic[SettingsT_co]):
    """Subclasses set ``TABLE``, ``RETRY_HEADERS`` and ``MAX_RECIPIENTS``, set
    ``KEY_HEADER`` or write ``credentials`` (the key from the settings or ``environ``, by
    ``resolve_secret``), and write ``request`` and ``read``. ``environ`` defaults to the
    process's environment; ``transport`` replaces httpx's network transport (tests use
    real loopback servers, so it stays None there).
    """

    TABLE: Table = DEFAULT_TABLE
    RETRY_HEADERS: tuple[tuple[str, HintKind], ...] = (("retry-after", HintKind.SECONDS),)
    MAX_RECIPIENTS: int = 50  # per request (To + Cc + Bcc): SES's and Postmark's cap
    # For a provider that takes its API key in one header: the header and the scheme in
    # front of the key ("" for none). Others write ``credentials``.
    KEY_HEADER: tuple[str, str] | None = None

    def __init__(
        self,
        settings: SettingsT_co,
        *,
        clock: Clock,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: LimitStore | None = None,
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self.clock = clock
        # Without the store's shared counts, this process's own (closed with the mailer).
        self._own_limits = LocalLimits(None) if limits is None else None
        counts = limits if limits is not None else self._own_limits
        assert counts is not None
        self.window = SendWindow(settings.limits, settings.name, counts)
        self.host = httpx.URL(settings.base_url).host
        credentials = self.credentials(environ_or(environ))
        self.client = httpx.AsyncClient(
            base_url=settings.base_url,
            headers=dict(credentials.headers),
            auth=credentials.auth,
            timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
            limits=httpx.Limits(
                max_connections=settings.max_connections,
                max_keepalive_connections=settings.max_connections,
            ),
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.settings.base_url}>"

    # -- what each provider writes ---------------------------------------------------

    def credentials(self, environ: Mapping[str, str]) -> Credentials:
        """The key as request headers or an auth flow; called once, at construction."""
        if self.KEY_HEADER is None:
            raise NotImplementedError
        name, scheme = self.KEY_HEADER
        return key_header(name, resolve_secret(self.settings, environ), scheme)

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        """The request for this message, and what the API could not carry."""
        raise NotImplementedError

    def read(self, answer: Answer) -> Reading:
        raise NotImplementedError

    # -- the shared part -------------------------------------------------------------

    def batches(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> list[Sequence[OutboundRecipient]]:
        """The recipients of each request: ``MAX_RECIPIENTS`` at a time, so a large
        delivery is never refused (and bounced) for the provider's recipient cap.
        Providers with other caps (per field, per message) split their own way."""
        step = self.MAX_RECIPIENTS
        return [recipients[start : start + step] for start in range(0, len(recipients), step)]

    async def deliver(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> list[Outcome]:
        """One request per batch, each counted against the sending limits; the outcomes
        in the order of ``recipients``."""
        outcomes: list[Outcome] = []
        for batch in self.batches(message, recipients):
            outcomes.extend(await self._deliver_one(message, batch))
        order = {r.address.lower(): i for i, r in enumerate(recipients)}
        return sorted(outcomes, key=lambda o: order[o.recipient.lower()])

    async def _deliver_one(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> list[Outcome]:
        now = self.clock.time()
        try:
            wait_until = await self.window.take(now)
        except StoreError as exc:  # the counts are out of reach: send nothing uncounted
            text = f"{self.name}: sending limits cannot be checked: {exc}"
            return [self._deferred(r.address, Reply(451, "4.3.0", text), 0.0) for r in recipients]
        if wait_until is not None:
            return self._over_limit(recipients, wait_until)
        started = self.clock.monotonic()
        answer, lost = await self.exchange(message, recipients)
        duration = self.clock.monotonic() - started
        if isinstance(answer, NoAnswer):
            reply = Reply(451, answer.enhanced, f"{self.name}: {answer.text}")
            return [self._deferred(r.address, reply, duration) for r in recipients]
        return self.settle(message, recipients, answer, duration, lost)

    def settle(
        self,
        message: OutboundMessage,
        recipients: Sequence[OutboundRecipient],
        answer: Answer,
        duration: float,
        lost: Sequence[str],
    ) -> list[Outcome]:
        """The outcomes of one request's answer: one verdict for all (``outcomes``),
        unless a provider answers per message or per recipient."""
        return self.outcomes(answer, recipients, duration, lost)

    async def exchange(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[Answer | NoAnswer, tuple[str, ...]]:
        """Send the request; the raw answer or why there is none, and what was not carried."""
        request, lost = self.request(message, recipients)
        return await self.send(request), lost

    async def send(self, request: httpx.Request) -> Answer | NoAnswer:
        """One request's answer, or why there is none."""
        try:
            response = await self.client.send(request)
            body = await response.aread()
        except httpx.TimeoutException:
            return NoAnswer("4.4.2", f"no answer from {self.host} in time")
        except httpx.ConnectError as exc:
            return NoAnswer("4.4.1", f"cannot connect to {self.host}: {exc}")
        except httpx.TransportError as exc:
            return NoAnswer("4.4.2", f"connection to {self.host} failed: {exc!r}")
        return Answer(response.status_code, response.headers, body)

    def outcomes(
        self,
        answer: Answer,
        recipients: Sequence[OutboundRecipient],
        duration: float = 0.0,
        lost: Sequence[str] = (),
    ) -> list[Outcome]:
        """One outcome per recipient; what the API could not carry goes into the reply
        text of accepted recipients, so the attempt row records it."""
        reading = self.read(answer)
        rule = classify(self.TABLE, answer.status, reading.code)
        words = reading.text or answer.text or f"HTTP {answer.status}"
        if rule.verdict is Verdict.MISCONFIG:
            _log.error(
                "mailer %s: %s refused the request (HTTP %s): %s",
                self.name, self.host, answer.status, _one_line(words),
            )  # fmt: skip
        retry_at = None
        if rule.verdict is Verdict.THROTTLED:
            retry_at = retry_hint(answer.headers, self.RETRY_HEADERS, self.clock.time())
        remote = RemoteInfo(mailer=self.name, host=self.host, provider_id=reading.provider_id)
        refused = {address.lower(): code for address, code in reading.refused.items()}
        result = []
        for recipient in recipients:
            code = refused.get(recipient.address.lower())
            this = rule if code is None else classify(self.TABLE, answer.status, code)
            result.append(
                _outcome(
                    recipient.address,
                    this,
                    status=answer.status,
                    words=words,
                    remote=remote,
                    duration=duration,
                    retry_at=retry_at,
                    lost=lost,
                )
            )
        return result

    def _over_limit(self, recipients: Sequence[OutboundRecipient], until: float) -> list[Outcome]:
        failover = self.settings.over_limit is OverLimit.FAILOVER
        text = f"{self.name}: sending limit reached, next window at {_utc(until)}"
        reply = Reply(451, "4.7.0", text)
        remote = RemoteInfo(mailer=self.name, host=self.host)
        return [
            Outcome(r.address, Disposition.DEFERRED, reply, remote, failover, retry_at=until)
            for r in recipients
        ]

    def _deferred(self, address: str, reply: Reply, duration: float) -> Outcome:
        remote = RemoteInfo(mailer=self.name, host=self.host)
        return Outcome(address, Disposition.DEFERRED, reply, remote, True, duration)

    async def aclose(self) -> None:
        await self.client.aclose()
        if self._own_limits is not None:
            await self._own_limits.aclose()


def _outcome(
    address: str,
    rule: Rule,
    *,
    status: int,
    words: str,
    remote: RemoteInfo,
    duration: float,
    retry_at: float | None,
    lost: Sequence[str],
) -> Outcome:
    disposition = {
        Verdict.ACCEPTED: Disposition.DELIVERED,
        Verdict.REJECTED: Disposition.BOUNCED,
    }.get(rule.verdict, Disposition.DEFERRED)
    text = f"{remote.mailer}: HTTP {status} {_one_line(words)}"
    if rule.verdict is Verdict.ACCEPTED and remote.provider_id:
        text = f"{remote.mailer}: accepted as {remote.provider_id}"
    if rule.verdict is Verdict.ACCEPTED and lost:
        text += f" (not carried: {'; '.join(lost)})"
    reply = Reply(_REPLY_CODES[rule.verdict], rule.enhanced, text[:500])
    failover = disposition is Disposition.DEFERRED
    return Outcome(address, disposition, reply, remote, failover, duration, retry_at=retry_at)


def _http_date(value: str) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:400]


def _utc(when: float) -> str:
    return email.utils.formatdate(when, usegmt=True)


def regroup(
    recipients: Sequence[OutboundRecipient], groups: Sequence[Sequence[str]]
) -> list[Sequence[OutboundRecipient]]:
    """Groups of addresses (a split a provider's caps demand) as groups of ``recipients``."""
    by_address = {r.address.lower(): r for r in recipients}
    return [[by_address[address.lower()] for address in group] for group in groups]


def environ_or(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ

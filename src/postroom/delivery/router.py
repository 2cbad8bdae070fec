"""The router (Postfix's trivial-rewrite and transport): which mailers, in which order.

``RouteTable`` picks a recipient's ``Route``: the first configured route whose
conditions match, else ``default-local`` (the ``local`` mailer) for local domains and
``default-remote`` (the ``mx`` mailer) for the rest. ``explain()`` says why, condition
by condition; ``decide()`` says it in a line, as each attempt records it.

``Router.deliver()`` walks a route's chain for a batch of recipients: all go to the
first mailer; those it defers with ``failover`` go to the next, in the same attempt;
and so on. Each recipient's final outcome is the last mailer's; every outcome of every
mailer is kept for the log, with the route and why that mailer was tried (``Routed``).
The router knows nothing of SMTP or HTTP: only outcomes. A mailer that raises, or
forgets a recipient, costs a deferral with failover, never the caller's attempt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from postroom.config.routes import DEFAULT_LOCAL, DEFAULT_REMOTE, RouteSettings
from postroom.config.settings import Settings
from postroom.delivery.mailers import Mailer
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Disposition, Outcome, RemoteInfo, Routed
from postroom.delivery.rules import (
    ALWAYS,
    Group,
    GroupResult,
    MessageView,
    compile_group,
    conditions_held,
)
from postroom.errors import AddressError
from postroom.mail.address import to_ascii_domain
from postroom.mail.tracking import Tracking
from postroom.smtp.replies import Reply

__all__ = [
    "DEFAULT_LOCAL_ROUTE",
    "DEFAULT_REMOTE_ROUTE",
    "Explanation",
    "Route",
    "RouteCheck",
    "RouteChoice",
    "RouteTable",
    "RoutedResult",
    "Router",
    "fails_over",
]

_log = logging.getLogger("postroom.delivery")


@dataclass(frozen=True, slots=True)
class Route:
    """A named chain of mailers and the conditions that select it. Routes compare and
    hash by name and chain, so a scheduler can group recipients by route."""

    name: str
    mailers: tuple[str, ...]
    rule: Group = field(default=ALWAYS, compare=False, repr=False)
    verp: bool | None = field(default=None, compare=False)  # None: [bounces] verp
    track: Tracking | None = field(default=None, compare=False)  # None: [tracking] default

    @classmethod
    def from_settings(cls, settings: RouteSettings) -> Route:
        track = settings.track
        tracking = None if track is None else Tracking("opens" in track, "clicks" in track)
        return cls(
            settings.name, settings.mailers, compile_group(settings), settings.verp, tracking
        )


DEFAULT_LOCAL_ROUTE: Final = Route(DEFAULT_LOCAL, ("local",))
DEFAULT_REMOTE_ROUTE: Final = Route(DEFAULT_REMOTE, ("mx",))


@dataclass(frozen=True, slots=True)
class RouteCheck:
    """One configured route as ``explain()`` tried it."""

    route: Route
    result: GroupResult


@dataclass(frozen=True, slots=True)
class Explanation:
    recipient: str
    route: Route  # the route taken
    checked: tuple[RouteCheck, ...]  # the configured routes tried, up to the one taken
    reason: str  # one sentence: why this route

    @property
    def is_default(self) -> bool:
        return self.route.name in (DEFAULT_LOCAL, DEFAULT_REMOTE)


@dataclass(frozen=True, slots=True)
class RouteChoice:
    """A recipient's route and the one-line reason recorded with its attempts."""

    route: Route
    reason: str


class RouteTable:
    def __init__(self, routes: Sequence[Route], local_domain: Callable[[str], bool]) -> None:
        self.routes = tuple(routes)
        self._local_domain = local_domain

    @classmethod
    def from_settings(
        cls, settings: Settings, local_domains: Callable[[str], bool] | Collection[str]
    ) -> RouteTable:
        """``local_domains``: a test for a domain in A-label form, or the domains."""
        if not callable(local_domains):
            local_domains = frozenset(_ascii_domain(d) for d in local_domains).__contains__
        return cls([Route.from_settings(r) for r in settings.routes], local_domains)

    def configured_for(self, view: MessageView) -> Route | None:
        """The first configured route whose conditions match; None: a default route's
        recipient."""
        return next((route for route in self.routes if route.rule.matches(view)), None)

    def decide(self, view: MessageView) -> RouteChoice:
        """The first route whose conditions match, else a default route; and why in a
        line: the conditions of the route that held (only that route is traced), or the
        default's reason."""
        route = self.configured_for(view)
        if route is None:
            default, reason = self._default_reason(view.recipient, bool(self.routes))
            return RouteChoice(default, f"default: {reason}")
        held = conditions_held(route.rule.trace(view))
        return RouteChoice(route, f"matched {held}" if held else "matched: it has no conditions")

    def explain(self, view: MessageView) -> Explanation:
        checked: list[RouteCheck] = []
        for route in self.routes:
            result = route.rule.trace(view)
            checked.append(RouteCheck(route, result))
            if result.matched:
                reason = f"route {route.name!r} is the first whose conditions match"
                return Explanation(view.recipient, route, tuple(checked), reason)
        default, reason = self._default_reason(view.recipient, bool(checked))
        return Explanation(view.recipient, default, tuple(checked), reason)

    def _default_reason(self, recipient: str, configured: bool) -> tuple[Route, str]:
        """The default route for ``recipient``'s domain, and why."""
        domain = _ascii_domain(recipient.rpartition("@")[2])
        local = self._local_domain(domain)
        default = DEFAULT_LOCAL_ROUTE if local else DEFAULT_REMOTE_ROUTE
        first = "no configured route matches" if configured else "no routes are configured"
        return default, f"{first}, and {domain!r} {'is' if local else 'is not'} a local domain"


def _ascii_domain(domain: str) -> str:
    try:
        return to_ascii_domain(domain)
    except AddressError:
        return domain.lower()


# -- walking a chain -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoutedResult:
    final: list[Outcome]  # one per recipient, in the order given: the last mailer's word
    attempts: list[Outcome]  # every mailer's outcomes, in the order they were tried


def _after_failover(route: str, failed: Outcome) -> Routed:
    mailer = failed.remote.mailer if failed.remote is not None else "?"
    return Routed(route, f"failover after {mailer} failed: {failed.reply}")


def _mailer_failed(name: str, error: BaseException) -> Reply:
    return Reply(451, "4.3.0", f"Mailer {name} failed: {type(error).__name__}")


def _no_mailer(name: str) -> Reply:
    return Reply(451, "4.3.5", f"No mailer named {name} is running")


def _no_outcome(name: str) -> Reply:
    return Reply(451, "4.3.0", f"Mailer {name} gave no outcome for this recipient")


def fails_over(outcome: Outcome) -> bool:
    """Whether the next mailer of the chain should try: a deferral marked ``failover``.
    Deliveries and bounces are final, whatever their flag says."""
    return outcome.failover and outcome.disposition is Disposition.DEFERRED


class Router:
    def __init__(self, mailers: Mapping[str, Mailer]) -> None:
        self._mailers = dict(mailers)

    async def deliver(
        self,
        route: Route,
        message: OutboundMessage,
        recipients: Sequence[OutboundRecipient],
        reasons: Mapping[str, str] | None = None,
    ) -> RoutedResult:
        """``reasons``: why each recipient (by address) is on ``route`` (``decide()``),
        recorded with the first mailer's outcomes; a later mailer's say which failed."""
        final: dict[str, Outcome] = {}
        attempts: list[Outcome] = []
        pending = list(recipients)
        why = {r.address: Routed(route.name, (reasons or {}).get(r.address, "")) for r in pending}
        for name in route.mailers:
            outcomes = [
                dataclasses.replace(o, routed=why[o.recipient])
                for o in await self._try(name, message, pending)
            ]
            if _log.isEnabledFor(logging.DEBUG):
                for outcome in outcomes:
                    _log.debug(
                        "%s to %s by mailer %s: %s %s",
                        message.id,
                        outcome.recipient,
                        name,
                        outcome.disposition.value,
                        outcome.reply,
                    )
            attempts.extend(outcomes)
            final.update((outcome.recipient, outcome) for outcome in outcomes)
            pending = [r for r in pending if fails_over(final[r.address])]
            why = {r.address: _after_failover(route.name, final[r.address]) for r in pending}
            if not pending:
                break
        return RoutedResult([final[r.address] for r in recipients], attempts)

    async def aclose(self) -> None:
        """Close every mailer; one that fails to close does not keep the rest open."""
        for name, mailer in self._mailers.items():
            try:
                await mailer.aclose()
            except Exception:
                _log.exception("closing mailer %s failed", name)

    async def _try(
        self, name: str, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> list[Outcome]:
        """One mailer's outcomes: exactly one per recipient, in order, each naming it."""
        mailer = self._mailers.get(name)
        if mailer is None:
            _log.error("route needs mailer %s, which is not running", name)
            return _deferred(name, recipients, _no_mailer(name))
        try:
            given = await mailer.deliver(message, recipients)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log.exception("mailer %s raised delivering %s", name, message.id)
            return _deferred(name, recipients, _mailer_failed(name, exc))
        return _one_each(name, message.id, recipients, given)


def _deferred(name: str, recipients: Sequence[OutboundRecipient], reply: Reply) -> list[Outcome]:
    remote = RemoteInfo(mailer=name)
    return [
        Outcome(r.address, Disposition.DEFERRED, reply, remote, failover=True) for r in recipients
    ]


def _one_each(
    name: str,
    message_id: str,
    recipients: Sequence[OutboundRecipient],
    given: Sequence[Outcome],
) -> list[Outcome]:
    by_address: dict[str, Outcome] = {}
    for outcome in given:
        by_address.setdefault(outcome.recipient, outcome)
    wanted = {r.address for r in recipients}
    if stray := [o.recipient for o in given if o.recipient not in wanted]:
        _log.warning("mailer %s answered for recipients it was not given: %s", name, stray)
    return [_checked(name, message_id, r, by_address.get(r.address)) for r in recipients]


def _checked(
    name: str, message_id: str, recipient: OutboundRecipient, outcome: Outcome | None
) -> Outcome:
    if outcome is None:
        _log.error("mailer %s gave no outcome for %s of %s", name, recipient.address, message_id)
        return _deferred(name, [recipient], _no_outcome(name))[0]
    if outcome.remote is None:
        return dataclasses.replace(outcome, remote=RemoteInfo(mailer=name))
    return outcome

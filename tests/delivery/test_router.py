"""The route table and the router: first match wins, defaults, failover along the chain."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from postroom.config.settings import Settings
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Disposition, Outcome, RemoteInfo, Routed
from postroom.delivery.router import (
    DEFAULT_LOCAL_ROUTE,
    DEFAULT_REMOTE_ROUTE,
    Route,
    Router,
    RouteTable,
    fails_over,
)
from postroom.delivery.rules import MessageView
from postroom.smtp.replies import Reply

OK = Reply(250, "2.0.0", "Ok")
LATER = Reply(451, "4.4.1", "No answer from host")
GREYLISTED = Reply(450, "4.7.1", "Greylisted")
NO_SUCH_USER = Reply(550, "5.1.1", "No such user")

Script = Callable[[str], tuple[Disposition, Reply, bool]]


class ScriptedMailer:
    """A real Mailer: answers each recipient as its script says and remembers the calls."""

    def __init__(
        self, name: str, script: Script | dict[str, tuple[Disposition, Reply, bool]]
    ) -> None:
        self.name = name
        self._script = script if callable(script) else script.__getitem__
        self.calls: list[list[str]] = []
        self.closed = False

    async def deliver(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> list[Outcome]:
        self.calls.append([r.address for r in recipients])
        outcomes = []
        for recipient in recipients:
            disposition, reply, failover = self._script(recipient.address)
            remote = RemoteInfo(mailer=self.name, host=f"{self.name}.example")
            outcomes.append(Outcome(recipient.address, disposition, reply, remote, failover))
        return outcomes

    async def aclose(self) -> None:
        self.closed = True


class BrokenMailer:
    """A Mailer that breaks its contract by raising."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    async def deliver(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> list[Outcome]:
        self.calls += 1
        raise ConnectionResetError("peer went away")

    async def aclose(self) -> None:
        raise RuntimeError("cannot close")


class ForgetfulMailer:
    """A Mailer that answers only for the first recipient and leaves out ``remote``."""

    name = "forgetful"

    async def deliver(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> list[Outcome]:
        first = recipients[0].address
        return [
            Outcome(first, Disposition.DELIVERED, OK),
            Outcome("stranger@example.com", Disposition.DELIVERED, OK),
        ]

    async def aclose(self) -> None:
        pass


def always(disposition: Disposition, reply: Reply, failover: bool = False) -> Script:
    return lambda _address: (disposition, reply, failover)


DELIVERS = always(Disposition.DELIVERED, OK)
FAILS_OVER = always(Disposition.DEFERRED, LATER, failover=True)

MESSAGE = OutboundMessage(
    id="Q1",
    sender="app@example.com",
    data=b"Subject: Invoice 7\r\nX-Stream: billing\r\n\r\nHi\r\n",
    principal="billing-api",
)


def rcpts(*addresses: str) -> list[OutboundRecipient]:
    return [OutboundRecipient(address) for address in addresses]


def settings(routes: list[dict[str, Any]], mailers: Sequence[str] = ()) -> Settings:
    return Settings.model_validate(
        {
            "mailers": [{"name": name, "type": "smtp", "host": "relay.test"} for name in mailers],
            "routes": routes,
        }
    )


def view(recipient: str, message: OutboundMessage = MESSAGE) -> MessageView:
    return MessageView(message, recipient)


# -- the route table -------------------------------------------------------------------

ROUTES: list[dict[str, Any]] = [
    {
        "name": "billing",
        "mailers": ["relay", "backup"],
        "conditions": [{"field": "header", "header": "X-Stream", "value": "billing"}],
        "any_of": [
            {"conditions": [{"field": "recipient_domain", "value": "customers.example"}]},
            {"conditions": [{"field": "source", "value": "billing-api"}]},
        ],
    },
    {
        "name": "org",
        "mailers": ["backup", "mx"],
        "conditions": [{"field": "recipient_domain", "value": "example.org"}],
    },
    {"name": "everything", "mailers": ["mx"]},
]


def table(routes: list[dict[str, Any]] = ROUTES, local: Any = ("example.test",)) -> RouteTable:
    return RouteTable.from_settings(settings(routes, ["relay", "backup"]), local)


def test_the_first_matching_route_wins() -> None:
    routes = table()
    assert routes.decide(view("ann@example.org")).route.name == "billing"  # billing and org match
    assert routes.decide(view("ann@example.org")).route.mailers == ("relay", "backup")
    other = OutboundMessage(id="Q2", sender="x@example.com", data=b"Subject: hi\r\n\r\n")
    assert routes.decide(view("ann@example.org", other)).route.name == "org"
    assert routes.decide(view("bob@example.net", other)).route.name == "everything"


def test_without_a_match_local_domains_go_to_local_and_the_rest_to_mx() -> None:
    routes = table(ROUTES[:2], local=["example.test", "Bücher.example"])
    other = OutboundMessage(id="Q2", sender="x@example.com", data=b"")
    assert routes.decide(view("ann@example.test", other)).route == DEFAULT_LOCAL_ROUTE
    assert routes.decide(view("ann@EXAMPLE.TEST", other)).route == DEFAULT_LOCAL_ROUTE
    assert routes.decide(view("ann@bücher.example", other)).route == DEFAULT_LOCAL_ROUTE
    assert routes.decide(view("ann@xn--bcher-kva.example", other)).route == DEFAULT_LOCAL_ROUTE
    assert routes.decide(view("ann@example.net", other)).route == DEFAULT_REMOTE_ROUTE
    assert DEFAULT_LOCAL_ROUTE.name == "default-local"
    assert DEFAULT_LOCAL_ROUTE.mailers == ("local",)
    assert DEFAULT_REMOTE_ROUTE.name == "default-remote"
    assert DEFAULT_REMOTE_ROUTE.mailers == ("mx",)


def test_local_domains_may_be_a_test() -> None:
    asked: list[str] = []

    def is_local(domain: str) -> bool:
        asked.append(domain)
        return domain == "xn--bcher-kva.example"

    routes = RouteTable.from_settings(Settings(), is_local)
    assert routes.decide(view("ann@bücher.example")).route == DEFAULT_LOCAL_ROUTE
    assert routes.decide(view("ann@example.net")).route == DEFAULT_REMOTE_ROUTE
    assert asked == ["xn--bcher-kva.example", "example.net"]


def test_routes_group_by_name_and_chain() -> None:
    routes = table()
    first = routes.decide(view("ann@example.org")).route
    again = routes.decide(view("bob@customers.example")).route
    assert first == again and hash(first) == hash(again)
    assert len({first, again, DEFAULT_REMOTE_ROUTE}) == 2


def test_explain_a_configured_route() -> None:
    other = OutboundMessage(id="Q2", sender="x@example.com", data=b"Subject: hi\r\n\r\n")
    explained = table().explain(view("ann@example.org", other))
    assert explained.route.name == "org" and not explained.is_default
    assert explained.route.mailers == ("backup", "mx")
    assert [c.route.name for c in explained.checked] == ["billing", "org"]
    billing, org = explained.checked
    assert not billing.result.matched
    assert billing.result.conditions[0].seen == ()  # no X-Stream header
    assert org.result.matched
    assert org.result.conditions[0].condition.text == "recipient_domain equals 'example.org'"
    assert explained.reason == "route 'org' is the first whose conditions match"


def test_explain_a_default_route() -> None:
    other = OutboundMessage(id="Q2", sender="x@example.com", data=b"Subject: hi\r\n\r\n")
    local = table(ROUTES[:1]).explain(view("ann@example.test", other))
    assert local.route == DEFAULT_LOCAL_ROUTE and local.is_default
    assert local.reason == ("no configured route matches, and 'example.test' is a local domain")
    remote = RouteTable.from_settings(Settings(), ()).explain(view("ann@example.net"))
    assert remote.route == DEFAULT_REMOTE_ROUTE and remote.checked == ()
    assert remote.reason == "no routes are configured, and 'example.net' is not a local domain"


def test_decide_names_the_conditions_that_made_the_route_match() -> None:
    streamed = OutboundMessage(
        id="Q3", sender="x@example.com", data=b"X-Stream: billing\r\n\r\nHi\r\n"
    )
    billing = table().decide(view("ann@customers.example", streamed))
    assert billing.route.name == "billing"
    assert billing.reason == (
        "matched header X-Stream equals 'billing' and recipient_domain equals"
        " 'customers.example'"  # the any_of group that held, not the other
    )
    both = table().decide(view("ann@customers.example"))  # MESSAGE: billing-api sent it
    assert both.reason.endswith("'customers.example' and source equals 'billing-api'")
    other = OutboundMessage(id="Q2", sender="x@example.com", data=b"Subject: hi\r\n\r\n")
    everything = table().decide(view("bob@example.net", other))
    assert (everything.route.name, everything.reason) == (
        "everything",
        "matched: it has no conditions",
    )
    local = table(ROUTES[:1]).decide(view("ann@example.test", other))
    assert local.route == DEFAULT_LOCAL_ROUTE
    assert local.reason == (
        "default: no configured route matches, and 'example.test' is a local domain"
    )
    # decide() and explain() never disagree
    for address in ("ann@example.org", "bob@example.net", "ann@example.test"):
        assert (
            table().decide(view(address, other)).route
            == table().explain(view(address, other)).route
        )


# -- the router ------------------------------------------------------------------------


async def test_each_attempt_records_its_route_and_why_its_mailer_was_tried() -> None:
    primary = ScriptedMailer("primary", FAILS_OVER)
    backup = ScriptedMailer("backup", DELIVERS)
    result = await Router({"primary": primary, "backup": backup}).deliver(
        CHAIN, MESSAGE, rcpts("a@x.example"), {"a@x.example": "matched sender equals 'x'"}
    )
    assert [(o.remote.mailer if o.remote else "", o.routed) for o in result.attempts] == [
        ("primary", Routed("chain", "matched sender equals 'x'")),
        ("backup", Routed("chain", "failover after primary failed: 451 4.4.1 No answer from host")),
    ]
    assert result.final == result.attempts[1:]


CHAIN = Route("chain", ("primary", "backup", "last"))


async def test_one_mailer_that_delivers_is_the_only_one_asked() -> None:
    primary = ScriptedMailer("primary", DELIVERS)
    backup = ScriptedMailer("backup", DELIVERS)
    result = await Router({"primary": primary, "backup": backup}).deliver(
        CHAIN, MESSAGE, rcpts("a@x.example", "b@x.example")
    )
    assert [o.disposition for o in result.final] == [Disposition.DELIVERED] * 2
    assert result.attempts == result.final
    assert primary.calls == [["a@x.example", "b@x.example"]]
    assert backup.calls == []


async def test_failover_walks_the_chain_only_for_failover_outcomes() -> None:
    primary = ScriptedMailer(
        "primary",
        {
            "delivered@x.example": (Disposition.DELIVERED, OK, False),
            "greylisted@x.example": (Disposition.DEFERRED, GREYLISTED, False),
            "unreachable@x.example": (Disposition.DEFERRED, LATER, True),
            "stubborn@x.example": (Disposition.DEFERRED, LATER, True),
        },
    )
    backup = ScriptedMailer(
        "backup",
        {
            "unreachable@x.example": (Disposition.DELIVERED, OK, False),
            "stubborn@x.example": (Disposition.DEFERRED, LATER, True),
        },
    )
    last = ScriptedMailer(
        "last", {"stubborn@x.example": (Disposition.BOUNCED, NO_SUCH_USER, False)}
    )
    order = ["delivered", "greylisted", "unreachable", "stubborn"]
    result = await Router({"primary": primary, "backup": backup, "last": last}).deliver(
        CHAIN, MESSAGE, rcpts(*(f"{name}@x.example" for name in order))
    )

    assert primary.calls == [[f"{name}@x.example" for name in order]]
    assert backup.calls == [["unreachable@x.example", "stubborn@x.example"]]
    assert last.calls == [["stubborn@x.example"]]
    finals = [
        (o.recipient.split("@")[0], o.disposition, o.remote and o.remote.mailer)
        for o in result.final
    ]
    assert finals == [
        ("delivered", Disposition.DELIVERED, "primary"),
        ("greylisted", Disposition.DEFERRED, "primary"),  # no failover: retried later
        ("unreachable", Disposition.DELIVERED, "backup"),
        ("stubborn", Disposition.BOUNCED, "last"),
    ]
    tried = [(o.recipient.split("@")[0], o.remote and o.remote.mailer) for o in result.attempts]
    assert tried == [
        ("delivered", "primary"),
        ("greylisted", "primary"),
        ("unreachable", "primary"),
        ("stubborn", "primary"),
        ("unreachable", "backup"),
        ("stubborn", "backup"),
        ("stubborn", "last"),
    ]


async def test_bounces_do_not_fail_over_even_when_flagged() -> None:
    primary = ScriptedMailer("primary", always(Disposition.BOUNCED, NO_SUCH_USER, failover=True))
    backup = ScriptedMailer("backup", DELIVERS)
    result = await Router({"primary": primary, "backup": backup}).deliver(
        CHAIN, MESSAGE, rcpts("a@x.example")
    )
    assert result.final[0].disposition is Disposition.BOUNCED
    assert backup.calls == []
    assert not fails_over(result.final[0])


async def test_the_last_mailers_failover_deferral_is_final() -> None:
    mailers = {name: ScriptedMailer(name, FAILS_OVER) for name in CHAIN.mailers}
    result = await Router(mailers).deliver(CHAIN, MESSAGE, rcpts("a@x.example"))
    assert [o.remote and o.remote.mailer for o in result.attempts] == list(CHAIN.mailers)
    final = result.final[0]
    assert final.disposition is Disposition.DEFERRED and final.failover
    assert final.remote is not None and final.remote.mailer == "last"


async def test_an_exception_is_a_deferral_with_failover(caplog: pytest.LogCaptureFixture) -> None:
    broken = BrokenMailer("primary")
    backup = ScriptedMailer("backup", DELIVERS)
    with caplog.at_level(logging.ERROR, logger="postroom.delivery"):
        result = await Router({"primary": broken, "backup": backup}).deliver(
            CHAIN, MESSAGE, rcpts("a@x.example", "b@x.example")
        )
    assert [o.disposition for o in result.final] == [Disposition.DELIVERED] * 2
    failed = result.attempts[:2]
    assert all(o.disposition is Disposition.DEFERRED and o.failover for o in failed)
    assert all(o.remote == RemoteInfo(mailer="primary") for o in failed)
    assert str(failed[0].reply) == "451 4.3.0 Mailer primary failed: ConnectionResetError"
    assert backup.calls == [["a@x.example", "b@x.example"]]
    assert "mailer primary raised delivering Q1" in caplog.text
    assert "ConnectionResetError" in caplog.text  # with the traceback


async def test_an_exception_at_the_end_of_the_chain_is_the_final_word() -> None:
    result = await Router({"only": BrokenMailer("only")}).deliver(
        Route("r", ("only",)), MESSAGE, rcpts("a@x.example")
    )
    assert result.final[0].disposition is Disposition.DEFERRED
    assert result.final[0].reply.enhanced == "4.3.0"


async def test_a_missing_mailer_defers_and_fails_over() -> None:
    backup = ScriptedMailer("backup", DELIVERS)
    result = await Router({"backup": backup}).deliver(CHAIN, MESSAGE, rcpts("a@x.example"))
    assert str(result.attempts[0].reply) == "451 4.3.5 No mailer named primary is running"
    assert result.final[0].disposition is Disposition.DELIVERED


async def test_every_recipient_gets_exactly_one_outcome_naming_the_mailer() -> None:
    result = await Router({"forgetful": ForgetfulMailer()}).deliver(
        Route("r", ("forgetful",)), MESSAGE, rcpts("a@x.example", "b@x.example")
    )
    assert [o.recipient for o in result.final] == ["a@x.example", "b@x.example"]
    delivered, forgotten = result.final
    assert delivered.disposition is Disposition.DELIVERED
    assert delivered.remote == RemoteInfo(mailer="forgetful")
    assert forgotten.disposition is Disposition.DEFERRED and forgotten.failover
    assert "stranger@example.com" not in [o.recipient for o in result.attempts]


async def test_aclose_closes_every_mailer_even_when_one_fails() -> None:
    first = ScriptedMailer("first", DELIVERS)
    last = ScriptedMailer("last", DELIVERS)
    await Router({"first": first, "broken": BrokenMailer("broken"), "last": last}).aclose()
    assert first.closed and last.closed


async def test_routes_from_the_table_feed_the_router() -> None:
    relay = ScriptedMailer("relay", FAILS_OVER)
    backup = ScriptedMailer("backup", DELIVERS)
    route = table().decide(view("ann@example.org")).route
    result = await Router({"relay": relay, "backup": backup}).deliver(
        route, MESSAGE, rcpts("ann@example.org")
    )
    assert result.final[0].remote is not None and result.final[0].remote.mailer == "backup"

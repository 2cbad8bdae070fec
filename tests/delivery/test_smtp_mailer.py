"""The smtp (relay) mailer against loopback relays: STARTTLS + AUTH, implicit TLS, failures."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from postroom.config.mailers import LocalMailerSettings, MxMailerSettings, SmtpMailerSettings
from postroom.config.settings import DnsSettings
from postroom.delivery.mailers.build import MailerDeps, build_mailer
from postroom.delivery.mailers.mta.mx import MxMailer
from postroom.delivery.mailers.mta.relay import SmtpMailer
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Disposition
from postroom.errors import ConfigError
from postroom.resolver import DnsResolver
from postroom.smtp.replies import Reply
from tests.conftest import FakeClock
from tests.support.smtp_peers import PeerCA, Peers, SmtpPeer

DATA = b"From: app@example.test\r\nSubject: hi\r\n\r\nbody\r\n"
MESSAGE = OutboundMessage(id="Q1", sender="app@example.test", data=DATA)
RECIPIENTS = [OutboundRecipient("a@one.test"), OutboundRecipient("b@two.test")]
USERS = {"postroom": "relay-secret"}

MakeMailer = Callable[..., SmtpMailer]


@pytest.fixture
def ca(tmp_path: Path) -> PeerCA:
    return PeerCA(tmp_path)


@pytest.fixture
def peers() -> Iterator[Peers]:
    with Peers() as started:
        yield started


@pytest.fixture
def relay(peers: Peers, ca: PeerCA) -> SmtpPeer:
    """A submission relay: STARTTLS required, then AUTH required."""
    context = ca.server_context("relay.test", "127.0.0.1")
    return peers.start(starttls=context, require_starttls=True, users=USERS)


@pytest.fixture
async def make_mailer(fake_clock: FakeClock) -> AsyncIterator[MakeMailer]:
    made: list[SmtpMailer] = []

    def make(
        peer: SmtpPeer, environ: dict[str, str] | None = None, **settings: object
    ) -> SmtpMailer:
        values: dict[str, object] = {
            "name": "relay", "host": peer.host, "port": peer.port, "timeout": 0.5,
            "connect_timeout": 0.5, "username": "postroom", "password": "relay-secret",
        }  # fmt: skip
        values.update(settings)
        mailer = SmtpMailer(
            SmtpMailerSettings.model_validate(values),
            hostname="mail.test",
            clock=fake_clock,
            environ=environ or {},
        )
        made.append(mailer)
        return mailer

    yield make
    for mailer in made:
        await mailer.aclose()


async def test_starttls_and_auth_then_one_transaction(
    relay: SmtpPeer, make_mailer: MakeMailer, ca: PeerCA
) -> None:
    outcomes = await make_mailer(relay, ca_file=ca.ca_file).deliver(MESSAGE, RECIPIENTS)
    assert [o.disposition for o in outcomes] == [Disposition.DELIVERED] * 2
    remote = outcomes[0].remote
    assert remote is not None and remote.mailer == "relay" and remote.tls == "TLSv1.3"
    [got] = relay.received
    assert got.recipients == ("a@one.test", "b@two.test")
    assert got.login == "postroom" and got.tls == "TLSv1.3" and got.data == DATA


async def test_a_wrong_password_defers_with_failover(
    relay: SmtpPeer, make_mailer: MakeMailer, ca: PeerCA
) -> None:
    mailer = make_mailer(relay, ca_file=ca.ca_file, password="wrong")
    outcomes = await mailer.deliver(MESSAGE, RECIPIENTS)
    assert all(o.disposition is Disposition.DEFERRED and o.failover for o in outcomes)
    assert (outcomes[0].reply.code, outcomes[0].reply.enhanced) == (454, "4.7.0")
    assert "535" in str(outcomes[0].reply)
    assert relay.received == [] and relay.mail_commands == 0


async def test_an_untrusted_certificate_defers_with_failover(
    relay: SmtpPeer, make_mailer: MakeMailer, tmp_path: Path
) -> None:
    other_ca = PeerCA(tmp_path)  # the relay's certificate is not from this one
    outcomes = await make_mailer(relay, ca_file=other_ca.ca_file).deliver(MESSAGE, RECIPIENTS)
    assert all(o.disposition is Disposition.DEFERRED and o.failover for o in outcomes)
    assert (outcomes[0].reply.code, outcomes[0].reply.enhanced) == (454, "4.7.5")
    assert relay.received == []


async def test_verification_can_be_turned_off(relay: SmtpPeer, make_mailer: MakeMailer) -> None:
    outcomes = await make_mailer(relay, verify=False).deliver(MESSAGE, RECIPIENTS)
    assert [o.disposition for o in outcomes] == [Disposition.DELIVERED] * 2


async def test_starttls_required_but_not_offered(peers: Peers, make_mailer: MakeMailer) -> None:
    plain = peers.start(users=USERS)
    outcomes = await make_mailer(plain).deliver(MESSAGE, RECIPIENTS)
    assert outcomes[0].disposition is Disposition.DEFERRED and outcomes[0].failover
    assert outcomes[0].reply.enhanced == "4.7.5" and plain.mail_commands == 0


async def test_implicit_tls(peers: Peers, make_mailer: MakeMailer, ca: PeerCA) -> None:
    relay = peers.start(implicit_tls=ca.server_context("127.0.0.1"), users=USERS)
    mailer = make_mailer(relay, tls="implicit", ca_file=ca.ca_file)
    outcomes = await mailer.deliver(MESSAGE, RECIPIENTS)
    assert [o.disposition for o in outcomes] == [Disposition.DELIVERED] * 2
    assert relay.received[0].tls is not None and relay.received[0].login == "postroom"


async def test_no_tls_and_no_auth(peers: Peers, make_mailer: MakeMailer) -> None:
    plain = peers.start()
    mailer = make_mailer(plain, tls="none", username=None, password=None)
    outcomes = await mailer.deliver(MESSAGE, RECIPIENTS)
    assert [o.disposition for o in outcomes] == [Disposition.DELIVERED] * 2
    assert plain.received[0].tls is None


async def test_a_refused_connection_defers_with_failover(make_mailer: MakeMailer) -> None:
    nowhere = SmtpPeer("127.0.0.1", 1)  # never started: the port is closed
    [first, _] = await make_mailer(nowhere).deliver(MESSAGE, RECIPIENTS)
    assert first.disposition is Disposition.DEFERRED and first.failover
    assert first.reply == Reply(451, "4.4.1", "Connection refused by 127.0.0.1:1")


async def test_a_recipient_refused_by_the_relay_bounces_without_failover(
    peers: Peers, make_mailer: MakeMailer
) -> None:
    relay = peers.start(reject_rcpt={"b@two.test": "550 5.7.1 Relaying denied"})
    mailer = make_mailer(relay, tls="none", username=None, password=None)
    delivered, bounced = await mailer.deliver(MESSAGE, RECIPIENTS)
    assert delivered.disposition is Disposition.DELIVERED
    assert bounced.disposition is Disposition.BOUNCED and not bounced.failover


async def test_the_password_comes_from_the_environment(
    relay: SmtpPeer, make_mailer: MakeMailer, ca: PeerCA
) -> None:
    mailer = make_mailer(
        relay, {"RELAY_PASSWORD": "relay-secret"}, ca_file=ca.ca_file, password=None,
        password_env="RELAY_PASSWORD",
    )  # fmt: skip
    outcomes = await mailer.deliver(MESSAGE, RECIPIENTS)
    assert outcomes[0].disposition is Disposition.DELIVERED


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"password": None, "password_env": "NOT_SET"}, "NOT_SET is not set"),
        ({"password_env": "RELAY_PASSWORD"}, "not both"),
        ({"username": None}, "no username"),
    ],
)
def test_password_settings_are_checked_at_start_up(
    settings: dict[str, object], problem: str, fake_clock: FakeClock
) -> None:
    values = {"name": "relay", "host": "relay.test", "username": "u", "password": "p"}
    values.update(settings)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=problem):
        SmtpMailer(
            SmtpMailerSettings.model_validate(values),
            hostname="mail.test",
            clock=fake_clock,
            environ={"RELAY_PASSWORD": "x"},
        )


def test_build_mailer_by_type(fake_clock: FakeClock, tmp_path: Path) -> None:
    deps = MailerDeps(
        resolver=DnsResolver(DnsSettings(nameservers=("127.0.0.1:53",))),
        hostname="mail.test",
        clock=fake_clock,
        rng=random.Random(1),
        data_dir=tmp_path,
    )
    assert isinstance(build_mailer(MxMailerSettings(name="mx"), deps), MxMailer)
    relay = build_mailer(SmtpMailerSettings(name="relay", host="relay.test"), deps)
    assert isinstance(relay, SmtpMailer) and relay.name == "relay"
    with pytest.raises(ConfigError, match="no mailer of type 'local'"):
        build_mailer(LocalMailerSettings(name="local"), deps, builders={})

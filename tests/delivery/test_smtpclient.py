"""mta.transaction: the classification table, parameters, and transactions against real peers."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from postroom.delivery.mailers.mta.pool import ConnectionPool
from postroom.delivery.mailers.mta.transaction import (
    CLASSIFICATION,
    Connection,
    Fault,
    Peer,
    Scope,
    SmtpClient,
    Stage,
    TlsMode,
    classify,
    disposition,
    mail_parameters,
    parse_reply,
    rcpt_parameters,
)
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Disposition
from postroom.smtp.replies import Reply
from tests.conftest import FakeClock
from tests.support.smtp_peers import PeerCA, Peers, SmtpPeer
from tests.support.thread import MakeServer

DATA = b"From: app@example.test\r\nSubject: hi\r\n\r\n.a line with a dot\r\nbody\r\n"
MESSAGE = OutboundMessage(id="Q1", sender="app@example.test", data=DATA)
ALICE, BOB = "alice@example.test", "bob@example.test"


def rcpts(*addresses: str) -> list[OutboundRecipient]:
    return [OutboundRecipient(a) for a in addresses]


def peer_of(peer: SmtpPeer, tls: TlsMode = TlsMode.OPPORTUNISTIC, verify: bool = False) -> Peer:
    return Peer("mx.example.test", peer.host, peer.port, tls=tls, verify=verify)


class PipeliningPeer(SmtpPeer):
    """An aiosmtpd peer that also announces PIPELINING (RFC 2920): it reads commands one
    line at a time from its buffer, so a pipelined batch is served in order."""

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        responses = await super().handle_EHLO(server, session, envelope, hostname, responses)
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


class PipeliningPeers(Peers):
    def start(self, host: str = "127.0.0.1", port: int = 0, **behaviour: Any) -> SmtpPeer:
        peer = PipeliningPeer(host, port, **behaviour).start()
        self._started.append(peer)
        return peer


@pytest.fixture(params=["lockstep", "pipelining"])
def peers(request: pytest.FixtureRequest) -> Iterator[Peers]:
    """Every transaction test runs once against each kind of peer."""
    with PipeliningPeers() if request.param == "pipelining" else Peers() as started:
        yield started


class Harness:
    def __init__(self, clock: FakeClock, max_uses: int = 100, idle_timeout: float = 10.0) -> None:
        self.pool: ConnectionPool[Connection] = ConnectionPool(
            clock=clock, max_uses=max_uses, idle_timeout=idle_timeout
        )
        self.client = SmtpClient(
            mailer="mx",
            hostname="mail.test",
            clock=clock,
            pool=self.pool,
            connect_timeout=0.5,
            command_timeout=0.5,
            chunking=True,
        )


@pytest.fixture
async def harness(fake_clock: FakeClock) -> AsyncIterator[Harness]:
    harness = Harness(fake_clock)
    yield harness
    await harness.pool.aclose()


# -- the table -------------------------------------------------------------------------------
def test_every_fault_has_a_rule_for_any_stage() -> None:
    for fault in Fault:
        assert (None, fault) in CLASSIFICATION
        for stage in Stage:
            assert classify(stage, fault) is not None


def test_the_table_keeps_the_policy() -> None:
    for (stage, fault), rule in CLASSIFICATION.items():
        # Bounces never fail over, deferrals always may; only RCPT replies are per recipient.
        assert rule.failover == (disposition(rule) is Disposition.DEFERRED), (stage, fault)
        assert (rule.scope is Scope.RECIPIENT) == (stage is Stage.RCPT), (stage, fault)
        if rule.ours is not None:
            assert str(rule.ours[0])[0] == rule.ours[1][0] == "4"
    assert disposition(classify(Stage.RCPT, Fault.PERMANENT)) is Disposition.BOUNCED
    assert not classify(Stage.RCPT, Fault.TRANSIENT).next_host
    assert classify(Stage.MAIL, Fault.TRANSIENT).next_host
    assert disposition(classify(Stage.AUTH, Fault.PERMANENT)) is Disposition.DEFERRED


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (250, "2.0.0 Ok: queued", Reply(250, "2.0.0", "Ok: queued")),
        (550, "5.1.1 No such user", Reply(550, "5.1.1", "No such user")),
        (550, "No such user", Reply(550, "5.0.0", "No such user")),
        (451, "5.7.1 odd", Reply(451, "4.7.1", "odd")),  # class follows the reply code
        (554, "5.7.1 one\n5.7.1 two", Reply(554, "5.7.1", ("one", "two"))),
        (421, "", Reply(421, "4.0.0", "")),
    ],
)
def test_parse_reply(code: int, text: str, expected: Reply) -> None:
    assert parse_reply(code, text) == expected


def test_parameters_follow_what_the_peer_offers() -> None:
    message = OutboundMessage(
        id="Q", sender="s@x.test", data=b"12345", body_type="8BITMIME", smtputf8=True,
        ret="hdrs", envid="id+1=2",
    )  # fmt: skip
    recipient = OutboundRecipient("r@x.test", notify="SUCCESS,FAILURE", orcpt="rfc822;r+x@x.test")
    everything = {"size": "100", "8bitmime": "", "smtputf8": "", "dsn": ""}
    assert mail_parameters(message, everything) == [
        "SIZE=5", "BODY=8BITMIME", "SMTPUTF8", "RET=HDRS", "ENVID=id+2B1+3D2",
    ]  # fmt: skip
    assert rcpt_parameters(recipient, everything) == [
        "NOTIFY=SUCCESS,FAILURE",
        "ORCPT=rfc822;r+2Bx@x.test",
    ]
    assert mail_parameters(message, {}) == []
    assert rcpt_parameters(recipient, {}) == []


# -- transactions ----------------------------------------------------------------------------
async def test_delivers_and_the_peer_gets_the_exact_message(peers: Peers, harness: Harness) -> None:
    peer = peers.start()
    result = await harness.client.deliver(peer_of(peer), MESSAGE, rcpts(ALICE, BOB))
    assert [o.disposition for o in result.outcomes] == [Disposition.DELIVERED] * 2
    assert result.outcomes[0].reply == Reply(250, "2.0.0", "OK: queued")
    remote = result.outcomes[0].remote
    assert remote is not None
    assert (remote.mailer, remote.host, remote.ip, remote.port) == (
        "mx", "mx.example.test", "127.0.0.1", peer.port,
    )  # fmt: skip
    [got] = peer.received
    assert got.data == DATA and got.recipients == (ALICE, BOB)
    assert got.sender == "app@example.test" and got.helo == "mail.test"
    assert f"SIZE={len(DATA)}" in got.mail_options


async def test_a_5xx_at_rcpt_bounces_that_recipient_only(peers: Peers, harness: Harness) -> None:
    peer = peers.start(reject_rcpt={BOB: "550 5.1.1 No such user"})
    result = await harness.client.deliver(peer_of(peer), MESSAGE, rcpts(ALICE, BOB))
    alice, bob = result.outcomes
    assert alice.disposition is Disposition.DELIVERED
    assert bob.disposition is Disposition.BOUNCED and not bob.failover
    assert bob.reply == Reply(550, "5.1.1", "No such user")
    assert result.retry == frozenset()
    assert peer.received[0].recipients == (ALICE,)


async def test_greylisting_defers_with_failover_but_not_to_the_next_host(
    peers: Peers, harness: Harness
) -> None:
    peer = peers.start(greylist=True)
    first = await harness.client.deliver(peer_of(peer), MESSAGE, rcpts(ALICE))
    [outcome] = first.outcomes
    assert outcome.disposition is Disposition.DEFERRED and outcome.failover
    assert outcome.reply.code == 451 and outcome.reply.enhanced == "4.7.1"
    assert first.retry == frozenset()
    second = await harness.client.deliver(peer_of(peer), MESSAGE, rcpts(ALICE))
    assert second.outcomes[0].disposition is Disposition.DELIVERED


async def test_5xx_at_data_bounces_all(peers: Peers, harness: Harness) -> None:
    peer = peers.start(data_reply="554 5.7.1 Spam")
    result = await harness.client.deliver(peer_of(peer), MESSAGE, rcpts(ALICE, BOB))
    assert {o.disposition for o in result.outcomes} == {Disposition.BOUNCED}
    assert result.outcomes[0].reply == Reply(554, "5.7.1", "Spam")


async def test_4xx_at_mail_defers_all_and_allows_the_next_host(
    peers: Peers, harness: Harness
) -> None:
    peer = peers.start(mail_reply="451 4.3.0 Try later")
    result = await harness.client.deliver(peer_of(peer), MESSAGE, rcpts(ALICE, BOB))
    assert {o.disposition for o in result.outcomes} == {Disposition.DEFERRED}
    assert all(o.failover for o in result.outcomes)
    assert result.retry == {ALICE, BOB}


async def test_connection_refused(harness: Harness) -> None:
    peer = Peer("mx.example.test", "127.0.0.1", 1)
    result = await harness.client.deliver(peer, MESSAGE, rcpts(ALICE))
    [outcome] = result.outcomes
    assert outcome.reply == Reply(
        451, "4.4.1", "Connection refused by mx.example.test[127.0.0.1]:1"
    )
    assert outcome.disposition is Disposition.DEFERRED and outcome.failover
    assert result.retry == {ALICE}


async def test_a_silent_server_times_out(peers: Peers, harness: Harness) -> None:
    peer = peers.start(stall_at="connect")
    [outcome] = (await harness.client.deliver(peer_of(peer), MESSAGE, rcpts(ALICE))).outcomes
    assert outcome.reply.enhanced == "4.4.2"
    assert "timed out while receiving the initial server greeting" in str(outcome.reply)


async def test_a_dropped_connection_is_deferred(peers: Peers, harness: Harness) -> None:
    peer = peers.start(drop_at="rcpt")
    result = await harness.client.deliver(peer_of(peer), MESSAGE, rcpts(ALICE))
    [outcome] = result.outcomes
    assert outcome.reply.code == 451 and outcome.reply.enhanced == "4.4.2"
    assert "lost connection" in str(outcome.reply) and result.retry == {ALICE}
    assert harness.pool.idle_count() == 0


async def test_a_5xx_greeting_skips_the_host(peers: Peers, harness: Harness) -> None:
    peer = peers.start(greeting="554 5.7.1 Go away")
    result = await harness.client.deliver(peer_of(peer), MESSAGE, rcpts(ALICE))
    [outcome] = result.outcomes
    assert outcome.disposition is Disposition.DEFERRED and result.retry == {ALICE}
    assert outcome.reply.code == 451 and "554 5.7.1 Go away" in str(outcome.reply)


async def test_a_message_over_the_peers_size_bounces_locally(
    peers: Peers, harness: Harness
) -> None:
    peer = peers.start(size=len(DATA) - 1)
    [outcome] = (await harness.client.deliver(peer_of(peer), MESSAGE, rcpts(ALICE))).outcomes
    assert outcome.disposition is Disposition.BOUNCED and not outcome.failover
    assert (outcome.reply.code, outcome.reply.enhanced) == (552, "5.3.4")
    assert peer.mail_commands == 0
    assert harness.pool.idle_count() == 1  # nothing went wrong with the session


async def test_smtputf8_needed_but_not_offered_bounces(peers: Peers, harness: Harness) -> None:
    peer = peers.start(smtputf8=False)
    message = OutboundMessage(id="Q", sender="jörg@example.test", data=DATA, smtputf8=True)
    [outcome] = (await harness.client.deliver(peer_of(peer), message, rcpts(ALICE))).outcomes
    assert (outcome.reply.code, outcome.reply.enhanced) == (550, "5.6.7")
    assert peer.mail_commands == 0


async def test_smtputf8_when_offered(peers: Peers, harness: Harness) -> None:
    peer = peers.start()
    message = OutboundMessage(id="Q", sender="jörg@example.test", data=DATA, smtputf8=True)
    [outcome] = (await harness.client.deliver(peer_of(peer), message, rcpts(ALICE))).outcomes
    assert outcome.disposition is Disposition.DELIVERED
    assert peer.received[0].sender == "jörg@example.test"
    assert "SMTPUTF8" in peer.received[0].mail_options


async def test_one_connection_carries_several_messages(peers: Peers, harness: Harness) -> None:
    peer = peers.start(reject_rcpt={BOB: "550 5.1.1 No"})
    for recipients in ([ALICE], [BOB], [ALICE, BOB]):  # a failed transaction in between
        await harness.client.deliver(peer_of(peer), MESSAGE, rcpts(*recipients))
    assert len(peer.received) == 2
    assert peer.connections == 1


async def test_max_uses_per_connection(peers: Peers, fake_clock: FakeClock) -> None:
    harness = Harness(fake_clock, max_uses=2)
    peer = peers.start()
    for _ in range(3):
        await harness.client.deliver(peer_of(peer), MESSAGE, rcpts(ALICE))
    await harness.pool.aclose()
    assert peer.connections == 2


async def test_idle_connections_expire(peers: Peers, fake_clock: FakeClock) -> None:
    harness = Harness(fake_clock, idle_timeout=30)
    peer = peers.start()
    await harness.client.deliver(peer_of(peer), MESSAGE, rcpts(ALICE))
    fake_clock.advance(31)
    await harness.client.deliver(peer_of(peer), MESSAGE, rcpts(ALICE))
    await harness.pool.aclose()
    assert peer.connections == 2


async def test_a_connection_closed_while_idle_is_replaced(peers: Peers, harness: Harness) -> None:
    peer = peers.start()
    await harness.client.deliver(peer_of(peer), MESSAGE, rcpts(ALICE))
    peer.disconnect_all()
    result = await harness.client.deliver(peer_of(peer), MESSAGE, rcpts(ALICE))
    assert result.outcomes[0].disposition is Disposition.DELIVERED
    assert peer.connections == 2


async def test_opportunistic_starttls_without_verification(
    peers: Peers, harness: Harness, tmp_path: Path
) -> None:
    untrusted = PeerCA(tmp_path)  # nobody trusts this CA: opportunistic TLS does not care
    peer = peers.start(starttls=untrusted.server_context("other.name"))
    [outcome] = (await harness.client.deliver(peer_of(peer), MESSAGE, rcpts(ALICE))).outcomes
    assert outcome.disposition is Disposition.DELIVERED
    assert outcome.remote is not None and outcome.remote.tls == "TLSv1.3"
    assert peer.received[0].tls == "TLSv1.3"


async def test_opportunistic_tls_falls_back_to_plain_text_when_the_handshake_fails(
    peers: Peers, harness: Harness, tmp_path: Path
) -> None:
    context = PeerCA(tmp_path).server_context("mx.example.test")
    context.set_ciphers("NULL")  # no cipher in common: the handshake must fail
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    peer = peers.start(starttls=context)
    [outcome] = (await harness.client.deliver(peer_of(peer), MESSAGE, rcpts(ALICE))).outcomes
    assert outcome.disposition is Disposition.DELIVERED
    assert outcome.remote is not None and outcome.remote.tls is None
    assert peer.connections == 2


async def test_required_tls_without_starttls_sends_nothing(peers: Peers, harness: Harness) -> None:
    peer = peers.start()
    target = peer_of(peer, tls=TlsMode.STARTTLS, verify=True)
    result = await harness.client.deliver(target, MESSAGE, rcpts(ALICE))
    [outcome] = result.outcomes
    assert outcome.disposition is Disposition.DEFERRED and outcome.failover
    assert (outcome.reply.code, outcome.reply.enhanced) == (454, "4.7.5")
    assert "TLS is required, but was not offered" in str(outcome.reply)
    assert peer.mail_commands == 0 and result.retry == {ALICE}


async def test_dot_stuffing_round_trip(peers: Peers, harness: Harness) -> None:
    peer = peers.start()
    data = b".first line\r\n\r\n.\r\n..x\r\n.x\r\n...\r\nlast\r\n"
    message = OutboundMessage(id="Q", sender="app@example.test", data=data)
    [outcome] = (await harness.client.deliver(peer_of(peer), message, rcpts(ALICE))).outcomes
    assert outcome.disposition is Disposition.DELIVERED
    assert peer.received[0].data == data


async def test_all_recipients_refused_then_the_connection_carries_on(
    peers: Peers, harness: Harness
) -> None:
    peer = peers.start(reject_rcpt={ALICE: "550 5.1.1 No", BOB: "450 4.2.0 Busy"})
    result = await harness.client.deliver(peer_of(peer), MESSAGE, rcpts(ALICE, BOB))
    assert [o.disposition for o in result.outcomes] == [
        Disposition.BOUNCED, Disposition.DEFERRED,
    ]  # fmt: skip
    assert peer.received == []
    good = await harness.client.deliver(peer_of(peer), MESSAGE, rcpts("carol@example.test"))
    assert good.outcomes[0].disposition is Disposition.DELIVERED
    assert peer.connections == 1


# -- BDAT to postroom's own server -----------------------------------------------------------
async def test_bdat_to_our_own_server_stores_the_message_byte_for_byte(
    make_server: MakeServer, harness: Harness, fake_clock: FakeClock
) -> None:
    """Our server offers CHUNKING: the message goes as one BDAT chunk, lines that start
    with a dot included, and is stored exactly as it was sent."""
    srv = make_server()
    srv.add_domain("example.test")
    srv.add_user(ALICE, "alice-pass")
    data = b"From: app@example.test\r\nSubject: dots\r\n\r\n.\r\n..two\r\n.one\r\nlast\r\n"
    message = OutboundMessage(id="Q9", sender="app@sender.test", data=data)
    peer = Peer("mail.test", "127.0.0.1", srv.ports["mx"], tls=TlsMode.NONE)
    client = SmtpClient(
        mailer="mx",
        hostname="client.test",
        clock=fake_clock,
        pool=harness.pool,
        connect_timeout=10,
        command_timeout=10,  # the server's checks (DNS) take their time
        chunking=True,
    )
    result = await client.deliver(peer, message, rcpts(ALICE))
    [outcome] = result.outcomes
    assert outcome.disposition is Disposition.DELIVERED, outcome.reply
    assert outcome.reply is not None
    queue_id = str(outcome.reply).rpartition("queued as ")[2]
    body = srv.call(srv.store.read_body(queue_id))
    assert body is not None and body.endswith(data)  # after the Received: header it added
    pooled = harness.pool.take(peer.key)
    assert pooled is not None and pooled.core.capabilities is not None
    assert pooled.core.capabilities.chunking  # so the message went as a BDAT chunk
    pooled.wire.abort()

"""Every provider mailer against its strict loopback fake: acceptance with the provider's
id, and the same policy for throttling, outages, timeouts, dropped connections and bad
keys (defer with failover; a bad key loud in the log without the key)."""

from __future__ import annotations

import logging

import pytest

from postroom.delivery.outcome import Disposition
from tests.conftest import FakeClock
from tests.delivery.provider_messages import message, recipients
from tests.delivery.providers.kinds import KINDS, running
from tests.support.http_fake import Reply

JUERGEN = "juergen@example.net"
NAMES = sorted(KINDS)

# The retry hint each provider documents for a 429, and the wall time it means.
_THROTTLED = {
    "sendgrid": {"X-RateLimit-Reset": "1800000120"},
    "mailgun": {"Retry-After": "120"},
    "postmark": {"Retry-After": "120"},
    "sparkpost": {"Retry-After": "120"},
    "ses": {"Retry-After": "120", "x-amzn-ErrorType": "TooManyRequestsException:"},
    "brevo": {"x-sib-ratelimit-reset": "120"},
    "resend": {"ratelimit-reset": "120", "retry-after": "120"},
}


@pytest.mark.parametrize("name", NAMES)
async def test_acceptance_records_the_providers_message_id(
    name: str, fake_clock: FakeClock
) -> None:
    with running(KINDS[name], fake_clock) as (fake, _, mailer):
        [outcome] = await mailer.deliver(message(), recipients(JUERGEN))
        await mailer.aclose()
    assert fake.problems == []
    assert len(fake.received) == 1
    assert outcome.disposition is Disposition.DELIVERED
    assert outcome.remote is not None
    assert outcome.remote.mailer == name
    assert outcome.remote.host == "127.0.0.1"
    assert outcome.remote.provider_id
    assert outcome.remote.provider_id in str(outcome.reply)
    assert outcome.reply.code == 250
    assert not outcome.failover


@pytest.mark.parametrize("name", NAMES)
async def test_429_defers_with_failover_until_the_providers_retry_time(
    name: str, fake_clock: FakeClock
) -> None:
    with running(KINDS[name], fake_clock) as (fake, _, mailer):
        fake.replies.append(Reply.json(429, {"message": "too many requests"}, **_THROTTLED[name]))
        [outcome] = await mailer.deliver(message(), recipients(JUERGEN))
        await mailer.aclose()
    assert fake.problems == []
    assert outcome.disposition is Disposition.DEFERRED
    assert outcome.failover
    assert outcome.reply.code == 451
    assert outcome.reply.enhanced == "4.7.0"
    assert outcome.retry_at == fake_clock.time() + 120


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("status", [500, 502, 503])
async def test_a_5xx_defers_with_failover(name: str, status: int, fake_clock: FakeClock) -> None:
    with running(KINDS[name], fake_clock) as (fake, _, mailer):
        fake.replies.append(Reply(status, b"upstream trouble", {"Content-Type": "text/plain"}))
        [outcome] = await mailer.deliver(message(), recipients(JUERGEN))
        await mailer.aclose()
    assert outcome.disposition is Disposition.DEFERRED
    assert outcome.failover
    assert outcome.retry_at is None  # the scheduler's backoff decides
    assert f"HTTP {status}" in str(outcome.reply)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("reply", "words"),
    [(Reply(stall=True), "no answer"), (Reply(drop=True), "connection")],
    ids=["stalled", "dropped"],
)
async def test_no_answer_defers_with_failover(
    name: str, reply: Reply, words: str, fake_clock: FakeClock
) -> None:
    with running(KINDS[name], fake_clock, timeout=0.3) as (fake, _, mailer):
        fake.replies.append(reply)
        [outcome] = await mailer.deliver(message(), recipients(JUERGEN))
        await mailer.aclose()
    assert outcome.disposition is Disposition.DEFERRED
    assert outcome.failover
    assert outcome.reply.enhanced == "4.4.2"
    assert words in str(outcome.reply)


@pytest.mark.parametrize("name", NAMES)
async def test_nothing_listening_defers_with_failover(name: str, fake_clock: FakeClock) -> None:
    with running(KINDS[name], fake_clock) as (_, server, _mailer):
        url = server.url
    await _mailer.aclose()
    mailer = KINDS[name].build(url, KINDS[name].key, fake_clock, {})
    [outcome] = await mailer.deliver(message(), recipients(JUERGEN))
    await mailer.aclose()
    assert outcome.disposition is Disposition.DEFERRED
    assert outcome.failover
    assert outcome.reply.enhanced == "4.4.1"


@pytest.mark.parametrize("name", NAMES)
async def test_a_refused_key_waits_and_is_logged_without_the_key(
    name: str, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-secret-0123456789"
    with (
        caplog.at_level(logging.ERROR, logger="postroom.delivery"),
        running(KINDS[name], fake_clock, key=wrong) as (fake, _, mailer),
    ):
        [outcome] = await mailer.deliver(message(), recipients(JUERGEN))
        await mailer.aclose()
    assert outcome.disposition is Disposition.DEFERRED
    assert outcome.failover
    assert outcome.reply.enhanced is not None and outcome.reply.enhanced.startswith("4.")
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert name in record.getMessage()
    assert "HTTP 40" in record.getMessage()
    assert wrong not in caplog.text
    assert wrong not in str(outcome.reply)
    assert wrong not in repr(mailer)
    if name == "ses":  # the fake noted the bad signature
        assert fake.problems == ["signature: signature does not match"]


async def test_mailgun_plain_text_401_words_reach_the_log(
    fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.ERROR, logger="postroom.delivery"),
        running(KINDS["mailgun"], fake_clock, key="nope") as (_, _server, mailer),
    ):
        await mailer.deliver(message(), recipients(JUERGEN))
        await mailer.aclose()
    assert "mailer mailgun" in caplog.text
    assert "Forbidden" in caplog.text


@pytest.mark.parametrize(("name", "cap"), [("postmark", 50), ("ses", 50), ("sendgrid", 1000)])
async def test_a_delivery_over_the_recipient_cap_goes_in_several_requests(
    name: str, cap: int, fake_clock: FakeClock
) -> None:
    many = [f"user{n}@example.net" for n in range(cap + 3)]
    with running(KINDS[name], fake_clock) as (fake, _, mailer):
        outcomes = await mailer.deliver(
            message(to="Someone <juergen@example.net>"), recipients(*many)
        )
        await mailer.aclose()
    assert fake.problems == []
    assert len(fake.received) == 2
    assert [o.recipient for o in outcomes] == many
    assert all(o.disposition is Disposition.DELIVERED for o in outcomes)
    ids = [o.remote.provider_id for o in outcomes if o.remote]
    assert len(set(ids[:cap])) == 1 and len(set(ids)) == 2

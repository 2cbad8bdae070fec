"""Gmail, Microsoft Graph and Zoho Mail mailers: OAuth tokens from a loopback token
endpoint, the APIs as strict loopback fakes, time from an injected clock."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from postroom.config.providers import (
    GmailMailerSettings,
    OutlookMailerSettings,
    ZohoMailerSettings,
)
from postroom.delivery.mailers.api.gmail import GmailMailer
from postroom.delivery.mailers.api.oauthmailer import OAuthHttpMailer
from postroom.delivery.mailers.api.outlook import OutlookMailer
from postroom.delivery.mailers.api.zoho import ZohoMailer
from postroom.delivery.mailers.oauth.tokens import TokenFile, TokenState, token_path
from postroom.delivery.outcome import Disposition
from tests.conftest import FakeClock
from tests.delivery.provider_messages import PDF, PNG, message, recipients
from tests.support.http_fake import FakeHttp, Reply, serve
from tests.support.oauth_fake import TokenEndpoint
from tests.support.provider_fakes import (
    GmailFake,
    GraphFake,
    OAuthFake,
    ZohoFake,
    graph_error,
)

JUERGEN = "juergen@example.net"
REVOKED = (
    "the refresh token for mailer {0} was revoked or expired: run `postroom mailer authorize {0}`"
)


@dataclass
class Rig:
    """A token endpoint, an API fake that trusts it, and a mailer pointed at both."""

    endpoint: TokenEndpoint
    fake: OAuthFake
    api: FakeHttp
    tokens: FakeHttp
    data_dir: Path
    clock: FakeClock

    def authorize(self, name: str) -> TokenState:
        """As ``postroom mailer authorize`` leaves it: a refresh and an access token."""
        self.endpoint.refresh_tokens.add("refresh-initial")
        self.endpoint.access_tokens.append("access-initial")
        state = TokenState(
            "refresh-initial", access_token="access-initial", expires_at=self.clock.time() + 3600
        )
        TokenFile(token_path(self.data_dir, name)).save(state)
        return state

    def mailer(self, kind: str, **extra: Any) -> OAuthHttpMailer[Any]:
        common: dict[str, Any] = {
            "name": kind,
            "base_url": self.api.url,
            "client_id": "client-123",
            "client_secret_env": "CLIENT_SECRET",
            "token_url": f"{self.tokens.url}/token",
            "timeout": 1.0,
            **extra,
        }
        env = {"CLIENT_SECRET": "secret-456"}
        args = {"clock": self.clock, "data_dir": self.data_dir, "environ": env}
        if kind == "gmail":
            return GmailMailer(GmailMailerSettings(**common), **args)
        if kind == "outlook":
            return OutlookMailer(OutlookMailerSettings(**common), **args)
        return ZohoMailer(ZohoMailerSettings(account_id="6000000001", **common), **args)


def _rig(fake: OAuthFake, tmp_path: Path, clock: FakeClock) -> Iterator[Rig]:
    with serve(fake.tokens) as tokens, serve(fake) as api:
        yield Rig(fake.tokens, fake, api, tokens, tmp_path, clock)


@pytest.fixture
def gmail(tmp_path: Path, fake_clock: FakeClock) -> Iterator[Rig]:
    yield from _rig(GmailFake(), tmp_path, fake_clock)


@pytest.fixture
def graph(tmp_path: Path, fake_clock: FakeClock) -> Iterator[Rig]:
    yield from _rig(GraphFake(), tmp_path, fake_clock)


@pytest.fixture
def zoho(tmp_path: Path, fake_clock: FakeClock) -> Iterator[Rig]:
    endpoint = TokenEndpoint(in_query=True, revoked_error=(200, "invalid_code"))
    yield from _rig(ZohoFake(tokens=endpoint), tmp_path, fake_clock)


# -- Gmail ------------------------------------------------------------------------------


async def test_gmail_sends_the_raw_message_and_adds_unnamed_recipients_as_bcc(gmail: Rig) -> None:
    gmail.authorize("gmail")
    mailer = gmail.mailer("gmail")
    original = message()
    outcomes = await mailer.deliver(original, recipients(JUERGEN, "hidden@example.com"))
    await mailer.aclose()

    assert gmail.fake.problems == []
    [sent] = gmail.fake.received
    assert sent["Subject"] == "Grüße aus Köln ☕"
    raw = json.loads(gmail.api.requests[0].body)["raw"]
    assert "+" not in raw and "/" not in raw  # base64url
    data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    assert data == b"Bcc: hidden@example.com\r\n" + original.data  # otherwise byte for byte
    assert [o.disposition for o in outcomes] == [Disposition.DELIVERED] * 2
    assert {o.remote.provider_id for o in outcomes if o.remote} == {"18c0000000000001"}
    assert len(gmail.tokens.requests) == 0  # the stored access token was still good


async def test_gmail_renews_a_token_before_it_expires(gmail: Rig) -> None:
    gmail.authorize("gmail")
    gmail.clock.advance(3600 - 299)  # inside the five-minute margin
    mailer = gmail.mailer("gmail")
    [outcome] = await mailer.deliver(message(), recipients(JUERGEN))
    await mailer.aclose()
    assert outcome.disposition is Disposition.DELIVERED
    assert [r.form()["grant_type"] for r in gmail.tokens.requests] == [["refresh_token"]]
    used = gmail.api.requests[-1].headers["authorization"]
    assert used == f"Bearer {gmail.endpoint.access_tokens[-1]}" != "Bearer access-initial"


async def test_gmail_renews_once_when_the_api_refuses_the_token(gmail: Rig) -> None:
    gmail.authorize("gmail")
    gmail.fake.expired.add("access-initial")  # the API no longer takes it, though not yet due
    mailer = gmail.mailer("gmail")
    [outcome] = await mailer.deliver(message(), recipients(JUERGEN))
    assert outcome.disposition is Disposition.DELIVERED
    assert len(gmail.tokens.requests) == 1
    assert [r.headers["authorization"] for r in gmail.api.requests] == [
        "Bearer access-initial",
        f"Bearer {gmail.endpoint.access_tokens[-1]}",
    ]

    gmail.fake.tokens = TokenEndpoint()  # the API takes no token the endpoint hands out
    [outcome] = await mailer.deliver(message(), recipients(JUERGEN))
    await mailer.aclose()
    assert (outcome.disposition, outcome.failover) == (Disposition.DEFERRED, True)
    assert "Invalid Credentials" in outcome.reply.text


async def test_gmail_revoked_refresh_token_fails_the_mailer_in_plain_words(gmail: Rig) -> None:
    gmail.authorize("gmail")
    gmail.endpoint.revoke_all()
    gmail.clock.advance(3600)
    mailer = gmail.mailer("gmail")
    [first] = await mailer.deliver(message(), recipients(JUERGEN))
    [second] = await mailer.deliver(message(), recipients(JUERGEN))
    await mailer.aclose()
    for outcome in (first, second):
        assert (outcome.disposition, outcome.failover) == (Disposition.DEFERRED, True)
        assert REVOKED.format("gmail") in outcome.reply.text
    assert len(gmail.tokens.requests) == 1  # failed: not asked again
    assert gmail.api.requests == []
    state = TokenFile(token_path(gmail.data_dir, "gmail")).load()
    assert state is not None and state.failed == REVOKED.format("gmail")


async def test_a_mailer_never_authorized_says_so(gmail: Rig) -> None:
    mailer = gmail.mailer("gmail")
    [outcome] = await mailer.deliver(message(), recipients(JUERGEN))
    await mailer.aclose()
    assert outcome.disposition is Disposition.DEFERRED and outcome.failover
    assert "run `postroom mailer authorize gmail`" in outcome.reply.text


@pytest.mark.parametrize(
    ("reply", "disposition", "enhanced"),
    [
        (Reply.json(429, {"error": {"code": 429, "message": "User-rate limit exceeded",
                                    "errors": [{"reason": "rateLimitExceeded"}]}},
                    **{"Retry-After": "120"}), Disposition.DEFERRED, "4.7.0"),
        (Reply.json(403, {"error": {"code": 403, "message": "Daily limit",
                                    "errors": [{"reason": "dailyLimitExceeded"}]}}),
         Disposition.DEFERRED, "4.7.0"),
        (Reply.json(403, {"error": {"code": 403, "message": "Delegation denied",
                                    "errors": [{"reason": "forbidden"}]}}),
         Disposition.DEFERRED, "4.3.5"),
        (Reply.json(400, {"error": {"code": 400, "message": "Invalid To header",
                                    "errors": [{"reason": "invalidArgument"}]}}),
         Disposition.BOUNCED, "5.6.0"),
        (Reply(503, b"backend error"), Disposition.DEFERRED, "4.3.0"),
        (Reply(stall=True), Disposition.DEFERRED, "4.4.2"),
        (Reply(drop=True), Disposition.DEFERRED, "4.4.2"),
    ],
)  # fmt: skip
async def test_gmail_error_answers(
    gmail: Rig, reply: Reply, disposition: Disposition, enhanced: str
) -> None:
    gmail.authorize("gmail")
    gmail.fake.replies.append(reply)
    mailer = gmail.mailer("gmail")
    [outcome] = await mailer.deliver(message(), recipients(JUERGEN))
    await mailer.aclose()
    assert (outcome.disposition, outcome.reply.enhanced) == (disposition, enhanced)
    assert outcome.failover == (disposition is Disposition.DEFERRED)
    if reply.status == 429:
        assert outcome.retry_at == gmail.clock.time() + 120


# -- Microsoft Graph ----------------------------------------------------------------------


async def test_graph_sends_base64_mime_and_renews_with_a_rotated_refresh_token(
    graph: Rig,
) -> None:
    graph.endpoint.rotate = True
    graph.authorize("outlook")
    graph.clock.advance(3600)
    mailer = graph.mailer("outlook")
    original = message()
    [outcome] = await mailer.deliver(original, recipients(JUERGEN))
    await mailer.aclose()
    assert graph.fake.problems == []
    assert outcome.disposition is Disposition.DELIVERED
    assert outcome.remote is not None and outcome.remote.provider_id is None  # Graph gives none
    assert base64.b64decode(graph.api.requests[0].body) == original.data
    state = TokenFile(token_path(graph.data_dir, "outlook")).load()
    assert state is not None and state.refresh_token != "refresh-initial"
    assert state.refresh_token in graph.endpoint.refresh_tokens


@pytest.mark.parametrize(
    ("reply", "disposition", "enhanced"),
    [
        (graph_error(400, "ErrorInvalidRecipients", "At least one recipient is not valid."),
         Disposition.BOUNCED, "5.1.3"),
        (graph_error(403, "ErrorSendAsDenied", "The user account which was used to submit"),
         Disposition.DEFERRED, "4.3.5"),
        (graph_error(429, "ApplicationThrottled", "Application is over its MailboxConcurrency"),
         Disposition.DEFERRED, "4.7.0"),
        (graph_error(503, "ServiceUnavailable", "Service Unavailable"),
         Disposition.DEFERRED, "4.7.0"),
        (graph_error(504, "GatewayTimeout", "Gateway Timeout"), Disposition.DEFERRED, "4.3.0"),
    ],
)  # fmt: skip
async def test_graph_error_answers(
    graph: Rig, reply: Reply, disposition: Disposition, enhanced: str
) -> None:
    graph.authorize("outlook")
    graph.fake.replies.append(reply)
    mailer = graph.mailer("outlook")
    [outcome] = await mailer.deliver(message(), recipients(JUERGEN))
    await mailer.aclose()
    assert (outcome.disposition, outcome.reply.enhanced) == (disposition, enhanced)


async def test_graph_revoked_refresh_token(graph: Rig) -> None:
    graph.authorize("outlook")
    graph.endpoint.revoke_all()
    graph.fake.expired.add("access-initial")
    mailer = graph.mailer("outlook")
    [outcome] = await mailer.deliver(message(), recipients(JUERGEN))
    await mailer.aclose()
    assert (outcome.disposition, outcome.failover) == (Disposition.DEFERRED, True)
    assert REVOKED.format("outlook") in outcome.reply.text


# -- Zoho ----------------------------------------------------------------------------------


async def test_zoho_uploads_attachments_then_sends_json(zoho: Rig) -> None:
    zoho.authorize("zoho")
    mailer = zoho.mailer("zoho")
    outcome, hidden = await mailer.deliver(message(), recipients(JUERGEN, "hidden@example.com"))
    [other] = await mailer.deliver(message(), recipients("hidden@example.com"))
    await mailer.aclose()
    fake = zoho.fake
    assert isinstance(fake, ZohoFake)
    assert fake.problems == []
    assert outcome.disposition is hidden.disposition is Disposition.DELIVERED
    assert outcome.remote is not None and outcome.remote.provider_id == "1700000003"
    assert "not carried" in outcome.reply.text and "header X-Campaign" in outcome.reply.text
    uploads = list(fake.uploads.values())
    assert uploads[:2] == [("logo.png", PNG, True), ("résumé.pdf", PDF, False)]
    sent = fake.received[2]
    assert sent["fromAddress"] == "Zoë Ärger <zoe@example.org>"
    assert sent["toAddress"] == "Jürgen Straße <juergen@example.net>"
    assert sent["bccAddress"] == "hidden@example.com"
    assert (sent["subject"], sent["mailFormat"], sent["encoding"]) == (
        "Grüße aus Köln ☕", "html", "UTF-8",
    )  # fmt: skip
    assert 'src="cid:logo@example.org"' in sent["content"]
    assert [a["attachmentName"] for a in sent["attachments"]] == ["logo.png", "résumé.pdf"]
    assert fake.received[5]["toAddress"] == "hidden@example.com"  # Bcc alone: in To
    assert "bccAddress" not in fake.received[5]
    assert other.disposition is Disposition.DELIVERED
    assert zoho.api.requests[0].headers["authorization"] == "Zoho-oauthtoken access-initial"


async def test_zoho_refreshes_with_query_parameters_and_fails_on_invalid_code(zoho: Rig) -> None:
    zoho.authorize("zoho")
    zoho.clock.advance(3600)
    mailer = zoho.mailer("zoho")
    [outcome] = await mailer.deliver(message(), recipients(JUERGEN))
    assert outcome.disposition is Disposition.DELIVERED
    refresh = zoho.tokens.requests[0]
    assert refresh.query["grant_type"] == ["refresh_token"] and refresh.body == b""

    zoho.endpoint.revoke_all()
    zoho.clock.advance(3600)
    [outcome] = await mailer.deliver(message(), recipients(JUERGEN))
    await mailer.aclose()
    assert (outcome.disposition, outcome.failover) == (Disposition.DEFERRED, True)
    assert REVOKED.format("zoho") in outcome.reply.text


async def test_zoho_upload_trouble_defers(zoho: Rig) -> None:
    zoho.authorize("zoho")
    zoho.fake.replies.append(Reply(500, b"Internal Server Error"))
    mailer = zoho.mailer("zoho")
    [outcome] = await mailer.deliver(message(), recipients(JUERGEN))
    await mailer.aclose()
    assert (outcome.disposition, outcome.failover) == (Disposition.DEFERRED, True)
    assert len(zoho.api.requests) == 1  # nothing sent after the failed upload


async def test_gmail_sends_a_large_delivery_once(gmail: Rig) -> None:
    """Gmail sends to the headers: one request, however many recipients."""
    gmail.authorize("gmail")
    many = [f"u{i:03d}@example.net" for i in range(80)]
    mailer = gmail.mailer("gmail")
    outcomes = await mailer.deliver(message(to=", ".join(many)), recipients(*many))
    await mailer.aclose()
    assert len(gmail.api.requests) == 1
    assert all(o.disposition is Disposition.DELIVERED for o in outcomes)

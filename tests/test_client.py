"""postroom.client against a real postroom server (SMTP, store, intake and the HTTP API on
loopback), sync and async: typed results, and each error class from a real answer."""

from __future__ import annotations

import email
import email.policy
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from postroom.client import (
    AsyncClient,
    Attachment,
    AuthenticationError,
    Client,
    Conflict,
    ConnectionError,
    MessageStatus,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    PostroomError,
    RateLimited,
    SendResult,
    Unavailable,
    ValidationError,
)
from postroom.directory.apikeys import Scope
from tests.conftest import FakeClock
from tests.support.thread import ServerThread


@dataclass
class Api:
    server: ServerThread
    url: str
    key: str

    def client(self, key: str | None = None) -> Client:
        return Client(self.url, key if key is not None else self.key, timeout=10)

    def stored(self, queue_id: str) -> EmailMessage:
        data = self.server.call(self.server.store.read_body(queue_id))
        assert data is not None
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@pytest.fixture
def make_api(make_server: Callable[..., ServerThread], fake_clock: FakeClock) -> Callable[..., Api]:
    def make(**overrides: object) -> Api:
        server = make_server(clock=fake_clock, **overrides)
        api = Api(server, f"http://127.0.0.1:{server.api_port}", "")
        api.key = server.create_api_key("app", scopes=tuple(Scope))
        return api

    return make


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


@pytest.fixture
def client(api: Api) -> Iterator[Client]:
    with api.client() as http:
        yield http


def send_one(
    client: Client,
    to: str = "a@example.net",
    subject: str = "Hello",
    text: str = "plain body",
    idempotency_key: str | None = None,
) -> SendResult:
    return client.send(
        from_="Shop <shop@example.com>",
        to=to,
        subject=subject,
        text=text,
        idempotency_key=idempotency_key,
    )


def test_send_composes_everything_and_get_reads_it_back(api: Api, client: Client) -> None:
    result = client.send(
        from_={"email": "shop@example.com", "name": "Shop"},
        to=["a@example.net", {"email": "b@example.net", "name": "B"}],
        cc=["c@example.net"],
        bcc=["hidden@example.net"],
        reply_to=["help@example.com"],
        subject="Your receipt",
        text="plain",
        html='<p>html <img src="cid:logo"></p>',
        headers={"X-Campaign": "spring"},
        attachments=[
            Attachment("r.pdf", b"%PDF-1.4 fake", "application/pdf"),
            Attachment("logo.png", b"\x89PNG fake", "image/png", content_id="logo"),
        ],
        tags=["receipt"],
        metadata={"order": "1234"},
    )
    assert result.status == "queued"
    assert result.recipients == (
        "a@example.net",
        "b@example.net",
        "c@example.net",
        "hidden@example.net",
    )
    status = client.get(result.id)
    assert isinstance(status, MessageStatus)
    assert (status.id, status.message_id) == (result.id, result.message_id)
    assert (status.from_, status.subject) == ("shop@example.com", "Your receipt")
    assert (status.source_kind, status.source_principal) == ("api", "app")
    assert (status.tags, dict(status.metadata)) == (("receipt",), {"order": "1234"})
    assert status.received_at.tzinfo is not None
    assert [(r.address, r.status, r.attempts) for r in status.recipients] == [
        (address, "queued", 0) for address in result.recipients
    ]
    assert status.attempts == ()
    message = api.stored(result.id)
    assert message["Bcc"] is None
    assert message["Reply-To"] == "help@example.com"
    assert message["X-Campaign"] == "spring"
    names = [name for part in message.walk() if (name := part.get_filename())]
    assert sorted(names) == ["logo.png", "r.pdf"]


def test_send_raw_with_and_without_an_envelope(api: Api, client: Client) -> None:
    raw = (
        b"From: Shop <shop@example.com>\r\nTo: a@example.net\r\nBcc: b@example.net\r\n"
        b"Subject: raw\r\n\r\nhello\r\n"
    )
    from_headers = client.send_raw(raw)
    assert from_headers.recipients == ("a@example.net", "b@example.net")
    assert client.get(from_headers.id).from_ == "shop@example.com"
    assert api.stored(from_headers.id)["Bcc"] is None
    given = client.send_raw(raw, mail_from="bounces@example.com", rcpt=["x@example.org"])
    assert given.recipients == ("x@example.org",)
    assert client.get(given.id).from_ == "bounces@example.com"


def test_idempotency_key_returns_the_first_answer_then_conflicts(client: Client) -> None:
    first = send_one(client, idempotency_key="order-1234")
    assert send_one(client, idempotency_key="order-1234") == first
    with pytest.raises(Conflict) as caught:
        send_one(client, subject="another", idempotency_key="order-1234")
    assert (caught.value.status, caught.value.code) == (409, "conflict")


def test_list_pages_and_filters(client: Client, fake_clock: FakeClock) -> None:
    ids = []
    for i in range(3):
        ids.append(send_one(client, to=f"r{i}@example.net").id)
        fake_clock.advance(1.0)  # queue ids (and so the log's order) follow the clock
    page = client.list(limit=2)
    assert [m.id for m in page.messages] == ids[::-1][:2]  # newest first
    assert page.next_cursor is not None
    rest = client.list(limit=2, cursor=page.next_cursor)
    assert [m.id for m in rest.messages] == [ids[0]]
    assert rest.next_cursor is None
    assert [m.id for m in client.list(to="r1@example.net").messages] == [ids[1]]
    assert len(client.list(status="queued", from_="shop@").messages) == 3
    assert client.list(since=datetime(2100, 1, 1, tzinfo=UTC)).messages == ()


def test_hold_release_retry_delete(client: Client) -> None:
    sent = send_one(client)
    assert client.hold(sent.id).held is True
    assert client.release(sent.id).held is False
    assert client.retry(sent.id).recipients[0].status == "queued"
    client.delete(sent.id)
    with pytest.raises(NotFound) as caught:
        client.get(sent.id)
    assert (caught.value.status, caught.value.code) == (404, "not_found")
    with pytest.raises(NotFound):
        client.delete(sent.id)


# -- errors ---------------------------------------------------------------------------


def test_a_wrong_key_is_an_authentication_error(api: Api) -> None:
    with api.client("pr_nope_nope") as bad, pytest.raises(AuthenticationError) as caught:
        send_one(bad)
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    assert isinstance(caught.value, PostroomError)


def test_a_sender_domain_the_key_may_not_use_is_permission_denied(api: Api) -> None:
    with (
        api.client(api.server.create_api_key("limited", ("example.org",))) as limited,
        pytest.raises(PermissionDenied) as caught,
    ):
        send_one(limited)
    assert (caught.value.status, caught.value.code) == (403, "forbidden")


def test_invalid_fields_are_a_validation_error_naming_them(client: Client) -> None:
    with pytest.raises(ValidationError) as caught:
        client.send(from_="shop@example.com", to=["a@example.net", "not an address"], text="x")
    error = caught.value
    assert (error.status, error.code) == (422, "invalid_request")
    assert [f.field for f in error.fields] == ["to[1]"]
    assert error.fields[0].message


def test_too_big_is_payload_too_large(make_api: Callable[..., Api]) -> None:
    api = make_api(limits={"max_message_size": 4096})
    with api.client() as client, pytest.raises(PayloadTooLarge) as caught:
        send_one(client, text="x" * 10_000)
    assert caught.value.status == 413


def test_rate_limited_carries_retry_after(make_api: Callable[..., Api]) -> None:
    api = make_api(api={"port": 0, "rate_limit": 60, "burst": 1})
    with api.client() as client:
        send_one(client)
        with pytest.raises(RateLimited) as caught:
            send_one(client)
    assert caught.value.status == 429
    assert caught.value.retry_after is not None and caught.value.retry_after > 0


def test_a_store_that_is_gone_is_unavailable(api: Api, client: Client) -> None:
    api.server.call(api.server.store.aclose())
    with pytest.raises(Unavailable) as caught:
        client.list()
    assert (caught.value.status, caught.value.retry_after) == (503, 60.0)


def test_no_server_is_a_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with (
            Client(f"http://127.0.0.1:{port}", "pr_x_y") as client,
            pytest.raises(ConnectionError) as caught,
        ):
            client.list()
    assert caught.value.status is None
    assert "cannot reach postroom" in caught.value.message


def test_an_id_that_cannot_be_a_queue_id_is_not_found_without_a_request(client: Client) -> None:
    with pytest.raises(NotFound):
        client.get("../../admin")


# -- the async client -------------------------------------------------------------------


async def test_the_async_client_does_the_same(api: Api, fake_clock: FakeClock) -> None:
    async with AsyncClient(api.url, api.key, timeout=10) as client:
        sent = await client.send(from_="shop@example.com", to="a@example.net", text="hi")
        fake_clock.advance(1.0)
        raw = await client.send_raw(b"From: s@example.com\r\nTo: b@example.net\r\n\r\nhi\r\n")
        assert (await client.get(sent.id)).recipients[0].address == "a@example.net"
        assert [m.id for m in (await client.list()).messages] == [raw.id, sent.id]
        assert (await client.hold(sent.id)).held
        assert not (await client.release(sent.id)).held
        assert (await client.retry(sent.id)).id == sent.id
        await client.delete(sent.id)
        with pytest.raises(NotFound):
            await client.get(sent.id)
        with pytest.raises(ValidationError) as caught:
            await client.send(from_="shop@example.com", to=[], text="hi")
        assert any(f.field == "to" for f in caught.value.fields)

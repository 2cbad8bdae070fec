"""Every error code over real HTTP, in the one JSON shape, never with a traceback."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from postroom.api import ApiDeps, ApiServer, create_app
from postroom.config.settings import ApiSettings
from postroom.directory.apikeys import ApiKeys, Scope
from postroom.errors import StoreUnavailable
from tests.api.conftest import MESSAGE, Api
from tests.support.thread import ServerThread

ONE_LINE = "must be one line: no CR, LF, NUL or other line break (U+2028 and the like)"


def error(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert "Traceback" not in answer.text
    detail: dict[str, Any] = answer.json()["error"]
    assert detail["status"] == status
    assert detail["code"] == code
    assert detail["message"]
    if status != 403:  # a 403 may name what it refused (the sender, an author header)
        assert ("fields" in detail) == (status == 422)
    return detail


def fields(answer: httpx.Response) -> dict[str, str]:
    return {f["field"]: f["message"] for f in error(answer, 422, "invalid_request")["fields"]}


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer pr_nope", "Basic YTpi", "Bearer pr_aaaaaaaaaaaaaaaa_" + "x" * 43],
)
def test_401_without_a_valid_key(api: Api, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with httpx.Client(base_url=api.url, headers=headers) as anonymous:
        for answer in (
            anonymous.post("/api/v1/messages", json=MESSAGE),
            anonymous.get("/api/v1/messages"),
            anonymous.get("/api/v1/messages/X"),
        ):
            error(answer, 401, "unauthorized")
            assert answer.headers["www-authenticate"].startswith("Bearer")


def test_a_revoked_key_is_refused(api: Api) -> None:
    token = api.create_key("old")
    with api.client(token) as client:
        assert client.get("/api/v1/messages").status_code == 200
        api.server.call(ApiKeys(api.server.store).revoke("old"))
        error(client.get("/api/v1/messages"), 401, "unauthorized")


def test_a_key_with_a_right_id_and_wrong_secret_is_refused(api: Api) -> None:
    prefix, key_id, _secret = api.key.split("_", 2)
    forged = f"{prefix}_{key_id}_{'A' * 43}"
    with api.client(forged) as client:
        error(client.get("/api/v1/messages"), 401, "unauthorized")


def test_403_for_a_sender_domain_the_key_may_not_use(api: Api) -> None:
    token = api.create_key("shop", ("example.com",))
    with api.client(token) as client:
        assert client.post("/api/v1/messages", json=MESSAGE).status_code == 202
        other = {**MESSAGE, "from": "x@elsewhere.example"}
        refused = error(client.post("/api/v1/messages", json=other), 403, "forbidden")
        assert refused["fields"][0]["field"] == "from"
        raw = b"From: ceo@bank.example\r\nTo: a@example.net\r\n\r\nPay now.\r\n"
        forged = client.post(
            "/api/v1/messages",
            content=raw,
            params={"mail_from": "bounces@example.com"},  # an allowed envelope sender
            headers={"Content-Type": "message/rfc822"},
        )
        assert error(forged, 403, "forbidden")["fields"][0]["field"] == "From"
    assert api.server.call(api.server.store.count_messages()) == 1


def test_413_over_the_size_limit(make_api: Callable[..., Api]) -> None:
    api = make_api(limits={"max_message_size": 4096})
    big = base64.b64encode(b"x" * (2 * 1024 * 1024)).decode()
    attachment = {"filename": "big.bin", "content": big}
    with api.client() as client:
        answer = client.post("/api/v1/messages", json={**MESSAGE, "attachments": [attachment]})
        error(answer, 413, "payload_too_large")
        # Under the request limit but over the message limit: intake refuses it.
        small = base64.b64encode(b"y" * 8000).decode()
        answer = client.post(
            "/api/v1/messages", json={**MESSAGE, "attachments": [{"content": small}]}
        )
        error(answer, 413, "payload_too_large")
    assert api.server.call(api.server.store.count_messages()) == 0


def test_422_names_each_invalid_field(client: httpx.Client) -> None:
    answer = client.post(
        "/api/v1/messages",
        json={
            "from": "not an address",
            "to": ["a@example.net", "bad@@example.net", {"email": "c@example.net", "nmae": "C"}],
            "bbc": ["x@example.net"],
            "subject": "fine",
            "text": "body",
            "headers": {"X-Evil": "a\r\nBcc: victim@example.net", "X-Fine": "ok"},
            "attachments": [{"content": "***not base64***"}],
        },
    )
    found = fields(answer)
    assert found == {
        "to[2].nmae": "unknown field",
        "bbc": "unknown field",
        "headers.X-Evil": ONE_LINE,
        "attachments[0].content": "not valid base64",
    }  # what the document states first; addresses are looked at once the shape is right
    answer = client.post(
        "/api/v1/messages",
        json={
            "from": "not an address",
            "to": ["a@example.net", "bad@@example.net"],
            "text": "body",
            "headers": {"X-Evil": "a\r\nBcc: victim@example.net", "X-Fine": "ok"},
            "attachments": [{"content": "***not base64***"}],
        },
    )
    found = fields(answer)
    assert set(found) == {"headers.X-Evil", "attachments[0].content"}
    answer = client.post(
        "/api/v1/messages",
        json={"from": "not an address", "to": ["a@example.net", "bad@@example.net"], "text": "b"},
    )
    found = fields(answer)
    assert set(found) == {"from", "to[1]"}
    assert found["from"] == "not a valid address"
    answer = client.post(
        "/api/v1/messages",
        json={**MESSAGE, "headers": {"X-Evil": "a\r\nBcc: victim@example.net", "Subject": "x"}},
    )
    assert fields(answer) == {"headers.X-Evil": ONE_LINE}
    answer = client.post("/api/v1/messages", json={**MESSAGE, "headers": {"subJect": "x"}})
    assert "headers.subJect" in fields(answer)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"from": "a@example.com", "text": "x"}, "to"),
        ({"from": "a@example.com", "to": "b@example.net"}, "text"),
        ({"to": "b@example.net", "text": "x"}, "from"),
        ({**MESSAGE, "to": 5}, "to"),
        ({**MESSAGE, "subject": "a\nb"}, "subject"),
        ({**MESSAGE, "tags": ["x" * 65]}, "tags[0]"),
        ({**MESSAGE, "metadata": {"k": 1}}, "metadata.k"),
        ({**MESSAGE, "attachments": [{"content": "", "content_type": "nonsense"}]},
         "attachments[0].content_type"),
    ],
)  # fmt: skip
def test_422_for_missing_and_malformed_fields(
    client: httpx.Client, body: dict[str, Any], field: str
) -> None:
    assert field in fields(client.post("/api/v1/messages", json=body))


def test_422_for_a_body_that_is_not_json_or_of_another_type(client: httpx.Client) -> None:
    json_type = {"Content-Type": "application/json"}
    assert "body" in fields(client.post("/api/v1/messages", content=b"{", headers=json_type))
    deep = b"[" * 100_000 + b"]" * 100_000
    assert "body" in fields(client.post("/api/v1/messages", content=deep, headers=json_type))
    not_utf8 = b'{"from": "\xff"}'
    assert "body" in fields(client.post("/api/v1/messages", content=not_utf8, headers=json_type))
    plain = {"Content-Type": "text/plain"}
    assert "Content-Type" in fields(client.post("/api/v1/messages", content=b"hi", headers=plain))
    raw = {"Content-Type": "message/rfc822"}
    no_rcpt = b"From: a@example.com\r\n\r\nbody\r\n"
    assert "rcpt" in fields(client.post("/api/v1/messages", content=no_rcpt, headers=raw))


def test_422_for_too_many_recipients(make_api: Callable[..., Api]) -> None:
    api = make_api(limits={"max_recipients": 2})
    with api.client() as client:
        many = {**MESSAGE, "to": ["a@example.net", "b@example.net", "c@example.net"]}
        assert "to" in fields(client.post("/api/v1/messages", json=many))


def test_422_for_an_unknown_local_user(api: Api, client: httpx.Client) -> None:
    api.server.add_domain("example.test")
    answer = client.post("/api/v1/messages", json={**MESSAGE, "to": "nobody@example.test"})
    assert "to" in fields(answer)


def test_422_for_bad_log_filters(client: httpx.Client) -> None:
    for params, field in (
        ({"status": "lost"}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"since": "nan"}, "since"),
        ({"since": "2027-01-15T08:00:00"}, "since"),  # no zone
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"sort": "x"}, "sort"),
    ):
        assert field in fields(client.get("/api/v1/messages", params=params))


def test_404_and_405(client: httpx.Client) -> None:
    error(client.get("/api/v1/messages/0000000000000000"), 404, "not_found")
    error(client.post("/api/v1/messages/0000000000000000/hold"), 404, "not_found")
    error(client.delete("/api/v1/messages/0000000000000000"), 404, "not_found")
    error(client.post("/api/v1/messages/X/frobnicate"), 404, "not_found")
    error(client.get("/api/v2/anything"), 404, "not_found")
    error(client.put("/api/v1/messages"), 405, "method_not_allowed")


def test_429_with_retry_after_then_allowed_again_as_the_clock_moves(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(api={"port": 0, "rate_limit": 60, "burst": 3})
    with api.client() as client, api.client(api.create_key("other")) as other:
        for _ in range(3):
            assert client.get("/api/v1/messages").status_code == 200
        limited = client.get("/api/v1/messages")
        error(limited, 429, "rate_limited")
        assert limited.headers["retry-after"] == "1"  # one token a second
        assert other.get("/api/v1/messages").status_code == 200  # per key
        error(client.post("/api/v1/messages", json=MESSAGE), 429, "rate_limited")
        api.clock.advance(1.0)
        assert client.get("/api/v1/messages").status_code == 200
        error(client.get("/api/v1/messages"), 429, "rate_limited")
        api.clock.advance(3.0)
        for _ in range(3):
            assert client.get("/api/v1/messages").status_code == 200


def test_503_with_retry_after_when_the_store_is_gone(api: Api, client: httpx.Client) -> None:
    api.server.call(api.server.store.aclose())
    answer = client.get("/api/v1/messages")
    error(answer, 503, "unavailable")
    assert answer.headers["retry-after"] == "60"


@pytest.fixture
def failing_api(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str, Exception], httpx.Client]]:
    """An API over the server's store and intake, the store's ``method`` raising ``exc``."""
    real = server.server
    store, intake = real.store, real.intake
    assert store is not None and intake is not None
    token = server.call(ApiKeys(store).create("k", (), tuple(Scope), any_sender=True)).token
    started: list[ApiServer] = []

    def make(method: str, exc: Exception) -> httpx.Client:
        async def fail(*args: object, **kwargs: object) -> None:
            raise exc

        monkeypatch.setattr(store, method, fail)
        deps = ApiDeps(
            store=store,
            intake=intake,
            clock=real.clock,
            settings=ApiSettings(port=0),
            hostname="mail.test",
            max_message_size=1 << 20,
            max_recipients=10,
        )
        api = ApiServer(create_app(deps), "127.0.0.1", 0, grace=1)
        server.call(api.start())
        started.append(api)
        url = f"http://127.0.0.1:{api.bound[1]}"
        return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"})

    yield make
    for api in started:
        server.call(api.stop())


def test_500_is_json_without_a_traceback(
    failing_api: Callable[[str, Exception], httpx.Client],
) -> None:
    with failing_api("message", RuntimeError("secret internal detail")) as client:
        answer = client.get("/api/v1/messages/0000000000000000")
    detail = error(answer, 500, "internal")
    assert "secret internal detail" not in answer.text
    assert detail["message"] == "internal error"


def _failure_logged(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    (record,) = [r for r in caplog.records if r.name == "postroom.api" and r.levelname == "ERROR"]
    assert record.exc_info is not None
    return record


def test_an_unexpected_error_is_logged_with_path_key_and_queue_id(
    failing_api: Callable[[str, Exception], httpx.Client], caplog: pytest.LogCaptureFixture
) -> None:
    with failing_api("message", RuntimeError("boom")) as client:
        error(client.post("/api/v1/messages/06HHGQ2G00ABCDEF/hold"), 500, "internal")
    line = _failure_logged(caplog).getMessage()
    assert "POST /api/v1/messages/06HHGQ2G00ABCDEF/hold failed" in line
    assert "key=k" in line
    assert "queue_id=06HHGQ2G00ABCDEF" in line


def test_a_failure_after_the_message_is_queued_logs_its_queue_id(
    failing_api: Callable[[str, Exception], httpx.Client], caplog: pytest.LogCaptureFixture
) -> None:
    with failing_api("save_send", RuntimeError("boom")) as client:
        answer = client.post("/api/v1/messages", json=MESSAGE)
    error(answer, 500, "internal")
    line = _failure_logged(caplog).getMessage()
    assert "POST /api/v1/messages failed: key=k queue_id=06" in line


def test_a_queued_message_is_202_even_if_its_tags_cannot_be_saved(
    server: ServerThread, failing_api: Callable[[str, Exception], httpx.Client]
) -> None:
    with failing_api("save_send", StoreUnavailable("locked")) as client:
        answer = client.post("/api/v1/messages", json={**MESSAGE, "tags": ["t"]})
    assert answer.status_code == 202
    assert server.call(server.store.message(answer.json()["id"])) is not None

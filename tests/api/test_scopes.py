"""API key scopes over HTTP: send, read (the mail sent with the key), read-all, queue.

A missing scope is 403 naming it; a message the key may not see is 404, whether it was
sent over SMTP or with another key, for reading and for every queue action alike.
"""

from __future__ import annotations

import smtplib

import httpx
import pytest

from postroom.directory.apikeys import Scope
from tests.api.conftest import MESSAGE, Api

ACTIONS = ("hold", "release", "retry")


def sent(client: httpx.Client, api: Api | None = None) -> str:
    if api is not None:
        api.clock.advance(1)  # queue ids order by time: newest first in the log
    answer = client.post("/api/v1/messages", json=MESSAGE)
    assert answer.status_code == 202, answer.text
    queue_id: str = answer.json()["id"]
    return queue_id


def sent_by_smtp(api: Api) -> str:
    api.server.add_domain("example.test")
    api.server.add_user("bob@example.test", "s3cret-pass")
    with smtplib.SMTP("127.0.0.1", api.server.ports["mx"], timeout=10) as smtp:
        smtp.sendmail("x@example.org", ["bob@example.test"], b"Subject: by smtp\r\n\r\nhi\r\n")
    (message,) = api.server.call(api.server.store.messages(limit=10))
    return message.id


def listed(client: httpx.Client, query: str = "") -> list[str]:
    answer = client.get(f"/api/v1/messages{query}")
    assert answer.status_code == 200, answer.text
    return [m["id"] for m in answer.json()["messages"]]


def missing_scope(answer: httpx.Response, scope: str) -> None:
    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    assert error["code"] == "forbidden"
    assert error["scope"] == scope
    assert scope in error["message"]


def test_a_default_key_lists_and_reads_only_the_mail_it_sent(api: Api) -> None:
    smtp_id = sent_by_smtp(api)
    with api.client() as app, api.client(api.create_key("shop", ("example.com",))) as shop:
        others = sent(app)
        own = [sent(shop, api), sent(shop, api)]
        assert listed(shop) == own[::-1]
        assert listed(shop, "?status=queued&limit=1") == own[:0:-1]
        for queue_id in own:
            assert shop.get(f"/api/v1/messages/{queue_id}").status_code == 200
        for queue_id in (others, smtp_id):
            answer = shop.get(f"/api/v1/messages/{queue_id}")
            # The same answer as for an id that does not exist.
            assert answer.status_code == 404
            assert answer.json()["error"]["message"] == f"no message with id {queue_id!r}"
        assert set(listed(app)) == {smtp_id, others, *own}  # read-all sees everything


def test_queue_actions_need_the_queue_scope(api: Api) -> None:
    with api.client(api.create_key("shop")) as shop:
        own = sent(shop)
        for verb in ACTIONS:
            missing_scope(shop.post(f"/api/v1/messages/{own}/{verb}"), "queue")
        missing_scope(shop.delete(f"/api/v1/messages/{own}"), "queue")
        # Refused before the lookup: an unknown id says nothing either.
        missing_scope(shop.delete("/api/v1/messages/NOSUCHID"), "queue")
    message = api.server.call(api.server.store.message(own))
    assert message is not None and not message.held


def test_a_queue_key_acts_on_its_own_mail_and_gets_404_for_the_rest(api: Api) -> None:
    smtp_id = sent_by_smtp(api)
    ops = api.create_key("ops", scopes=(Scope.SEND, Scope.READ, Scope.QUEUE))
    with api.client() as app, api.client(ops) as client:
        others = [sent(app), smtp_id]
        own = sent(client)
        for queue_id in others:
            for verb in ACTIONS:
                assert client.post(f"/api/v1/messages/{queue_id}/{verb}").status_code == 404
            assert client.delete(f"/api/v1/messages/{queue_id}").status_code == 404
        assert client.post(f"/api/v1/messages/{own}/hold").json()["held"] is True
        assert client.post(f"/api/v1/messages/{own}/release").json()["held"] is False
        assert client.delete(f"/api/v1/messages/{own}").status_code == 204
    store = api.server.store
    for queue_id in others:
        message = api.server.call(store.message(queue_id))
        assert message is not None and not message.held  # untouched


def test_read_all_and_queue_reach_every_message(api: Api) -> None:
    smtp_id = sent_by_smtp(api)
    admin = api.create_key("admin", scopes=(Scope.READ_ALL, Scope.QUEUE))
    with api.client(admin) as client:
        assert listed(client) == [smtp_id]
        assert client.get(f"/api/v1/messages/{smtp_id}").status_code == 200
        assert client.post(f"/api/v1/messages/{smtp_id}/hold").status_code == 200
        assert client.delete(f"/api/v1/messages/{smtp_id}").status_code == 204
        missing_scope(client.post("/api/v1/messages", json=MESSAGE), "send")
    assert api.server.call(api.server.store.message(smtp_id)) is None


@pytest.mark.parametrize(
    ("scopes", "method", "path", "lacking"),
    [
        ((Scope.QUEUE,), "GET", "/api/v1/messages", "read"),
        ((Scope.QUEUE,), "GET", "/api/v1/messages/{id}", "read"),
        ((Scope.SEND,), "GET", "/api/v1/messages", "read"),
        ((Scope.SEND, Scope.READ_ALL), "POST", "/api/v1/messages/{id}/retry", "queue"),
        ((Scope.READ,), "POST", "/api/v1/messages", "send"),
    ],
)
def test_a_missing_scope_is_403_naming_it(
    api: Api, scopes: tuple[Scope, ...], method: str, path: str, lacking: str
) -> None:
    with api.client() as app:
        queue_id = sent(app)
    with api.client(api.create_key("limited", scopes=scopes)) as client:
        answer = client.request(method, path.format(id=queue_id), json=MESSAGE)
        missing_scope(answer, lacking)


def test_the_document_lists_403_for_every_operation_that_needs_a_key(client: httpx.Client) -> None:
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    secured = [op for item in paths.values() for op in item.values() if op.get("security")]
    assert len(secured) == 13  # messages 7, events 1, suppressions 3, webhooks 2
    assert all("403" in op["responses"] for op in secured)

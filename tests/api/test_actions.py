"""Queue actions over HTTP: hold, release, retry, delete; and the log's pages."""

from __future__ import annotations

from dataclasses import replace

import httpx

from postroom.mail.envelope import Source, SourceKind
from postroom.store.models import RecipientStatus, RecipientUpdate
from tests.api.conftest import MESSAGE, Api
from tests.store.factories import new_message


def sent(client: httpx.Client, **fields: object) -> str:
    answer = client.post("/api/v1/messages", json={**MESSAGE, **fields})
    assert answer.status_code == 202, answer.text
    queue_id: str = answer.json()["id"]
    return queue_id


def test_hold_then_release(api: Api, client: httpx.Client) -> None:
    queue_id = sent(client)
    held = client.post(f"/api/v1/messages/{queue_id}/hold")
    assert held.status_code == 200
    assert held.json()["held"] is True
    assert (
        api.server.call(api.server.store.claim_due(api.clock.time() + 1, limit=9, lease=60)) == []
    )
    assert [m["id"] for m in client.get("/api/v1/messages?status=held").json()["messages"]] == [
        queue_id
    ]
    conflict = client.post(f"/api/v1/messages/{queue_id}/retry")
    assert conflict.status_code == 409
    released = client.post(f"/api/v1/messages/{queue_id}/release")
    assert released.status_code == 200
    assert released.json()["held"] is False
    claims = api.server.call(api.server.store.claim_due(api.clock.time() + 1, limit=9, lease=60))
    assert [c.message.id for c in claims] == [queue_id]


def test_retry_makes_a_deferred_recipient_due_now(api: Api, client: httpx.Client) -> None:
    queue_id = sent(client)
    store = api.server.store
    now = api.clock.time()
    (_claim,) = api.server.call(store.claim_due(now, limit=1, lease=60))
    update = RecipientUpdate("a@example.net", RecipientStatus.DEFERRED, now + 3600, "451 later")
    api.server.call(store.record_outcomes(queue_id, [update], []))
    assert api.server.call(store.claim_due(now, limit=1, lease=60)) == []
    answer = client.post(f"/api/v1/messages/{queue_id}/retry")
    assert answer.status_code == 200
    recipient = answer.json()["recipients"][0]
    assert recipient["status"] == "deferred"
    assert recipient["last_reply"] == "451 later"
    assert len(api.server.call(store.claim_due(now, limit=1, lease=60))) == 1


def test_retry_of_a_finished_message_is_a_conflict(api: Api, client: httpx.Client) -> None:
    queue_id = sent(client)
    store = api.server.store
    api.server.call(store.claim_due(api.clock.time(), limit=1, lease=60))
    done = RecipientUpdate("a@example.net", RecipientStatus.DELIVERED, None, "250 ok")
    api.server.call(store.record_outcomes(queue_id, [done], []))
    assert client.post(f"/api/v1/messages/{queue_id}/retry").status_code == 409


def test_delete(api: Api, client: httpx.Client) -> None:
    queue_id = sent(client)
    answer = client.delete(f"/api/v1/messages/{queue_id}")
    assert answer.status_code == 204
    assert answer.content == b""
    assert client.get(f"/api/v1/messages/{queue_id}").status_code == 404
    assert api.server.call(api.server.store.message(queue_id)) is None


def test_the_log_pages_newest_first_with_a_cursor(api: Api, client: httpx.Client) -> None:
    ids = []
    for n in range(5):
        ids.append(sent(client, subject=f"n{n}", to=f"r{n}@example.net"))
        api.clock.advance(1)
    first = client.get("/api/v1/messages", params={"limit": 2}).json()
    assert [m["id"] for m in first["messages"]] == [ids[4], ids[3]]
    second = client.get("/api/v1/messages", params={"limit": 2, "cursor": first["next_cursor"]})
    assert [m["id"] for m in second.json()["messages"]] == [ids[2], ids[1]]
    last = client.get(
        "/api/v1/messages", params={"limit": 2, "cursor": second.json()["next_cursor"]}
    ).json()
    assert [m["id"] for m in last["messages"]] == [ids[0]]
    assert last["next_cursor"] is None
    assert [m["subject"] for m in first["messages"]] == ["n4", "n3"]


def test_the_log_filters(api: Api, client: httpx.Client) -> None:
    early = sent(client, to="early@example.net")
    api.clock.advance(100)
    late = sent(client, **{"from": "news@example.org"})

    def found(**params: str | float) -> list[str]:
        return [m["id"] for m in client.get("/api/v1/messages", params=params).json()["messages"]]

    assert found(to="early") == [early]
    assert found(**{"from": "news@"}) == [late]
    assert found(since=str(api.clock.time() - 50)) == [late]
    since = "2027-01-15T08:00:50Z"  # FakeClock starts at 2027-01-15T08:00:00Z
    assert found(since=since) == [late]
    assert found(status="queued") == [late, early]
    assert found(status="delivered") == []


def test_a_delivered_message_shows_each_attempt(api: Api, client: httpx.Client) -> None:
    api.server.add_domain("example.test")
    api.server.add_user("ann@example.test", "pass-word-1")
    queue_id = sent(client, to=["ann@example.test"])
    assert api.server.run_delivery() == 1
    body = client.get(f"/api/v1/messages/{queue_id}").json()
    (recipient,) = body["recipients"]
    assert recipient["status"] == "delivered"
    assert recipient["attempts"] == 1
    (attempt,) = body["attempts"]
    assert attempt["recipient"] == "ann@example.test"
    assert attempt["mailer"] == "local"
    assert attempt["status"] == "delivered"
    assert attempt["reply"].startswith("250")
    assert attempt["at"].endswith("Z")
    listed = client.get("/api/v1/messages", params={"status": "delivered"}).json()
    assert [m["id"] for m in listed["messages"]] == [queue_id]


def test_a_dsn_names_the_message_it_reports_on(api: Api, client: httpx.Client) -> None:
    original = sent(client)
    dsn = replace(
        new_message(at=api.clock.time(), sender=None),
        source=Source(SourceKind.DSN, protocol="local", dsn_of=original),
    )
    api.server.call(api.server.store.enqueue(dsn))
    assert client.get(f"/api/v1/messages/{dsn.id}").json()["source"] == {
        "kind": "dsn", "principal": None, "dsn_of": original,
    }  # fmt: skip
    assert client.get(f"/api/v1/messages/{original}").json()["source"]["dsn_of"] is None

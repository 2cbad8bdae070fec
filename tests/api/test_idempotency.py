"""Idempotency-Key: a retried send returns the first answer and sends nothing new."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.api.conftest import MESSAGE, Api


def send(client: httpx.Client, key: str, body: Mapping[str, object] = MESSAGE) -> httpx.Response:
    return client.post("/api/v1/messages", json=body, headers={"Idempotency-Key": key})


def count(api: Api) -> int:
    return api.server.call(api.server.store.count_messages())


def test_a_retry_gets_the_first_answer_and_no_second_message(
    api: Api, client: httpx.Client
) -> None:
    first = send(client, "order-1234")
    assert first.status_code == 202
    again = send(client, "order-1234")
    assert again.status_code == 202
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert count(api) == 1
    assert send(client, "order-1235").json()["id"] != first.json()["id"]
    assert count(api) == 2


def test_the_same_key_with_another_body_is_a_conflict(api: Api, client: httpx.Client) -> None:
    assert send(client, "k").status_code == 202
    answer = send(client, "k", {**MESSAGE, "subject": "Changed"})
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "conflict"
    assert count(api) == 1


def test_keys_are_per_api_key(api: Api, client: httpx.Client) -> None:
    with api.client(api.create_key("other")) as other:
        assert send(client, "shared").status_code == 202
        assert send(other, "shared").status_code == 202
    assert count(api) == 2


def test_a_key_is_forgotten_after_24_hours(api: Api, client: httpx.Client) -> None:
    first = send(client, "daily").json()
    api.clock.advance(24 * 3600 + 1)
    second = send(client, "daily").json()
    assert second["id"] != first["id"]
    assert count(api) == 2


def test_a_refused_request_is_not_remembered(api: Api, client: httpx.Client) -> None:
    bad = {**MESSAGE, "to": "not an address"}
    assert send(client, "fix-me", bad).status_code == 422
    assert send(client, "fix-me").status_code == 202  # corrected and retried, same key
    assert count(api) == 1


def test_concurrent_requests_with_one_key_send_once(api: Api) -> None:
    def attempt(_: int) -> httpx.Response:
        with api.client() as client:
            return send(client, "burst")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(attempt, range(8)))
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["id"] for a in answers}) == 1
    assert count(api) == 1


def test_a_bad_idempotency_key_is_422(client: httpx.Client) -> None:
    answer = send(client, "x" * 256)
    assert answer.status_code == 422
    assert answer.json()["error"]["fields"][0]["field"] == "Idempotency-Key"


def test_a_retry_after_the_message_was_deleted_is_a_conflict_not_a_second_send(
    api: Api, client: httpx.Client
) -> None:
    first = send(client, "order-9")
    queue_id = first.json()["id"]
    assert client.delete(f"/api/v1/messages/{queue_id}").status_code == 204
    again = send(client, "order-9")
    assert again.status_code == 409
    assert queue_id in again.json()["error"]["message"]
    assert count(api) == 0

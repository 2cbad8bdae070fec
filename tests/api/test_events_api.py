"""The events and suppression endpoints: one rule for the API door as for the others."""

from __future__ import annotations

import httpx

from postroom.directory.apikeys import Scope
from tests.api.conftest import MESSAGE, Api


def test_a_suppressed_recipient_is_recorded_rejected_with_an_event(
    api: Api, client: httpx.Client
) -> None:
    added = client.post(
        "/api/v1/suppressions", json={"address": "B@Example.NET", "detail": "asked"}
    )
    assert added.status_code == 201, added.text
    assert added.json()["address"] == "b@example.net"
    assert added.json()["source"] == "api key app"
    again = client.post("/api/v1/suppressions", json={"address": "b@example.net"})
    assert again.status_code == 200
    message = {**MESSAGE, "to": ["a@example.net", "b@example.net"], "tags": ["welcome"],
               "metadata": {"user": "42"}}  # fmt: skip
    sent = client.post("/api/v1/messages", json=message)
    assert sent.status_code == 202, sent.text
    queue_id = sent.json()["id"]
    shown = client.get(f"/api/v1/messages/{queue_id}").json()
    states = {r["address"]: r["status"] for r in shown["recipients"]}
    assert states == {"a@example.net": "queued", "b@example.net": "rejected"}
    assert shown["attempts"] == []
    events = client.get(f"/api/v1/messages/{queue_id}/events").json()["events"]
    assert [(e["type"], e["recipient"], e["reason"]) for e in events] == [
        ("queued", "a@example.net", ""),
        ("rejected", "b@example.net", "suppressed"),
    ]
    assert events[1]["reply"] == (
        "550 5.7.1 <b@example.net>: recipient is on the suppression list (manual)"
    )
    # Tags and metadata went in with the message: its first events carry them.
    assert {(tuple(e["tags"]), e["metadata"]["user"]) for e in events} == {(("welcome",), "42")}
    assert events[0]["message_id"] == sent.json()["message_id"]


def test_the_list_pages_filters_and_removes(api: Api, client: httpx.Client) -> None:
    for address in ("c@example.net", "a@example.net", "b@example.net"):
        client.post("/api/v1/suppressions", json={"address": address, "scope": "shop.example"})
    client.post("/api/v1/suppressions", json={"address": "a@example.net"})
    first = client.get("/api/v1/suppressions", params={"limit": 2}).json()
    assert [(e["address"], e["scope"]) for e in first["suppressions"]] == [
        ("a@example.net", ""),
        ("a@example.net", "shop.example"),
    ]
    rest = client.get("/api/v1/suppressions", params={"after": first["next_cursor"]}).json()
    assert [e["address"] for e in rest["suppressions"]] == ["b@example.net", "c@example.net"]
    assert rest["next_cursor"] is None
    scoped = client.get("/api/v1/suppressions", params={"scope": ""}).json()
    assert [e["address"] for e in scoped["suppressions"]] == ["a@example.net"]
    removed = client.delete("/api/v1/suppressions/a@example.net", params={"scope": "shop.example"})
    assert removed.status_code == 200
    gone = client.delete("/api/v1/suppressions/a@example.net", params={"scope": "shop.example"})
    assert gone.status_code == 404
    assert gone.json()["error"]["message"] == "a@example.net is not suppressed for shop.example"


def test_bad_input_names_the_field(api: Api, client: httpx.Client) -> None:
    cases = [
        ({"scope": "x"}, "address"),
        ({"address": "not-an-address"}, "address"),
        ({"address": "a@example.net", "reason": "bored"}, "reason"),
        ({"address": "a@example.net", "scope": "[192.0.2.1]"}, "scope"),
        ({"address": "a@example.net", "detail": "two\nlines\x00"}, "detail"),
        ({"address": ["a@example.net"]}, "address"),
    ]
    for body, field in cases:
        answer = client.post("/api/v1/suppressions", json=body)
        assert answer.status_code == 422, body
        assert [f["field"] for f in answer.json()["error"]["fields"]] == [field], answer.text
    limit = client.get("/api/v1/suppressions", params={"limit": "0"})
    assert limit.status_code == 422


def test_keys_need_the_suppressions_scope_and_read_all_for_webhooks(api: Api) -> None:
    sender = api.create_key("sender", scopes=(Scope.SEND, Scope.READ))
    with api.client(sender) as http:
        refused = http.get("/api/v1/suppressions")
        assert refused.status_code == 403
        assert refused.json()["error"]["scope"] == "suppressions"
        assert http.post("/api/v1/suppressions", json={"address": "a@x.test"}).status_code == 403
        assert http.get("/api/v1/webhooks").status_code == 403
        assert http.get("/api/v1/webhooks/deliveries").status_code == 403
    with api.client() as http:
        listed = http.get("/api/v1/webhooks").json()
        assert listed == {"webhooks": [], "not_fanned_out": listed["not_fanned_out"]}
        assert http.get("/api/v1/webhooks/deliveries").json() == {"deliveries": []}
        assert http.get("/api/v1/webhooks/deliveries?state=lost").status_code == 422

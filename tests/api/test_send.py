"""POST /api/v1/messages over real HTTP: the message is in the queue, durable, with its
source, and composed as MIME; the raw form with its envelope."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import os
import subprocess
import sys
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import httpx

from tests.api.conftest import MESSAGE, Api
from tests.support.servers import cli_out, write_config


def stored(api: Api, queue_id: str) -> EmailMessage:
    data = api.server.call(api.server.store.read_body(queue_id))
    assert data is not None
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_a_json_message_is_queued_with_its_source_and_answered_202(
    api: Api, client: httpx.Client
) -> None:
    answer = client.post(
        "/api/v1/messages",
        json={**MESSAGE, "cc": [{"email": "c@example.net", "name": "C"}], "bcc": ["b@example.net"]},
    )
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["status"] == "queued"
    assert body["recipients"] == ["a@example.net", "c@example.net", "b@example.net"]
    queued = api.server.call(api.server.store.message(body["id"]))
    assert queued is not None  # durable before the answer
    assert (queued.source_kind, queued.principal, queued.sender) == (
        "api",
        "app",
        "shop@example.com",
    )
    assert [r.address for r in queued.recipients] == body["recipients"]
    message = stored(api, body["id"])
    assert message["Message-ID"] == body["message_id"]
    assert message["Bcc"] is None
    assert message["Cc"] == "C <c@example.net>"
    assert "by mail.test (postroom)" in message["Received"]
    assert "with HTTP" in message["Received"]


def test_the_message_is_found_by_get_and_in_the_log(api: Api, client: httpx.Client) -> None:
    sent = client.post(
        "/api/v1/messages", json={**MESSAGE, "tags": ["receipt"], "metadata": {"order": "1234"}}
    ).json()
    one = client.get(f"/api/v1/messages/{sent['id']}")
    assert one.status_code == 200
    body = one.json()
    assert body["message_id"] == sent["message_id"]
    assert body["subject"] == "Hello"
    assert body["from"] == "shop@example.com"
    assert body["source"] == {"kind": "api", "principal": "app", "dsn_of": None}
    assert body["tags"] == ["receipt"]
    assert body["metadata"] == {"order": "1234"}
    assert body["recipients"][0]["address"] == "a@example.net"
    assert body["recipients"][0]["status"] == "queued"
    assert body["attempts"] == []
    listed = client.get("/api/v1/messages", params={"to": "a@example"}).json()
    assert [m["id"] for m in listed["messages"]] == [sent["id"]]
    assert listed["messages"][0]["tags"] == ["receipt"]


def test_postroom_log_shows_the_api_message_with_its_key(api: Api, tmp_path: Path) -> None:
    with api.client() as client:
        sent = client.post("/api/v1/messages", json=MESSAGE).json()
    config = write_config(tmp_path / "cli.toml", api.server.data_dir)
    env = {**os.environ, "POSTROOM_CONFIG": str(config)}
    result = subprocess.run(
        [sys.executable, "-m", "postroom", "log", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    (entry,) = json.loads(result.stdout)
    assert entry["id"] == sent["id"]
    assert entry["source"]["kind"] == "api"
    assert entry["source"]["principal"] == "app"


def test_a_raw_message_with_an_envelope_from_the_query(api: Api, client: httpx.Client) -> None:
    raw = (
        b"From: Shop <shop@example.com>\nTo: a@example.net\nBcc: hidden@example.net\n"
        b"Subject: raw\n\nbody line\n"
    )
    answer = client.post(
        "/api/v1/messages",
        content=raw,
        headers={"Content-Type": "message/rfc822"},
        params={"mail_from": "bounces@example.com", "rcpt": ["x@example.net", "y@example.net"]},
    )
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["recipients"] == ["x@example.net", "y@example.net"]
    queued = api.server.call(api.server.store.message(body["id"]))
    assert queued is not None and queued.sender == "bounces@example.com"
    message = stored(api, body["id"])
    assert message["Bcc"] is None
    assert message["Message-ID"] == body["message_id"]  # added: the message had none
    assert message["Date"] is not None
    assert message.get_content().strip() == "body line"


def test_a_raw_message_without_envelope_uses_its_headers(api: Api, client: httpx.Client) -> None:
    raw = (
        b"From: shop@example.com\r\nTo: a@example.net\r\nBcc: b@example.net\r\n"
        b"Message-ID: <m1@x>\r\n\r\nhi\r\n"
    )
    answer = client.post(
        "/api/v1/messages", content=raw, headers={"Content-Type": "message/rfc822"}
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["recipients"] == ["a@example.net", "b@example.net"]
    assert answer.json()["message_id"] == "<m1@x>"
    assert stored(api, answer.json()["id"])["Bcc"] is None


def test_attachments_arrive_as_mime_parts(api: Api, client: httpx.Client) -> None:
    pdf = b"%PDF-1.4 fake"
    answer = client.post(
        "/api/v1/messages",
        json={
            **MESSAGE,
            "html": '<p><img src="cid:logo@shop"></p>',
            "attachments": [
                {
                    "filename": "Rechnung März.pdf",
                    "content_type": "application/pdf",
                    "content": base64.b64encode(pdf).decode(),
                },
                {
                    "filename": "logo.png",
                    "content_type": "image/png",
                    "content": base64.b64encode(b"PNG").decode(),
                    "content_id": "logo@shop",
                },
            ],
        },
    )
    assert answer.status_code == 202, answer.text
    message = stored(api, answer.json()["id"])
    assert message.get_content_type() == "multipart/mixed"
    (attachment,) = message.iter_attachments()
    assert attachment.get_filename() == "Rechnung März.pdf"
    assert attachment.get_content() == pdf
    html = message.get_body(("html",))
    assert html is not None


def test_the_health_endpoint_needs_no_key(api: Api) -> None:
    with api.client(key="") as anonymous:
        assert anonymous.get("/api/v1/health").json() == {"status": "ok"}


def test_a_large_attachment_is_composed_and_stored_whole(api: Api, client: httpx.Client) -> None:
    blob = bytes(range(256)) * 2048  # 512 KiB: composed off the event loop
    attachment = {"filename": "blob.bin", "content": base64.b64encode(blob).decode()}
    answer = client.post("/api/v1/messages", json={**MESSAGE, "attachments": [attachment]})
    assert answer.status_code == 202, answer.text
    (part,) = stored(api, answer.json()["id"]).iter_attachments()
    assert part.get_content() == blob


def test_mail_from_and_rcpt_set_the_envelope_of_a_json_message_too(api: Api) -> None:
    with api.client() as client:
        answer = client.post(
            "/api/v1/messages",
            params={"mail_from": "bounces+42@example.com", "rcpt": ["x@example.org"]},
            json=MESSAGE,
        )
        assert answer.status_code == 202, answer.text
        assert answer.json()["recipients"] == ["x@example.org"]
        stored = api.server.call(api.server.store.message(answer.json()["id"]))
        assert stored is not None
        assert stored.sender == "bounces+42@example.com"
        assert [r.address for r in stored.recipients] == ["x@example.org"]
        bad = client.post("/api/v1/messages", params={"rcpt": ["a@b\x00"]}, json=MESSAGE)
        assert bad.status_code == 422
        assert bad.json()["error"]["fields"][0]["field"] == "rcpt[0]"


def test_a_body_removed_by_retention_is_said_so_by_the_api_and_log_show(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    api = make_api(retention={"days": 30, "bodies_days": 1})
    api.server.add_domain("example.net")
    api.server.add_user("a@example.net", "s3cret-pass")
    with api.client() as client:
        sent = client.post("/api/v1/messages", json=MESSAGE).json()
        assert api.server.run_delivery() == 1
        before = client.get(f"/api/v1/messages/{sent['id']}").json()
        assert before["body_removed"] is False
        assert before["recipients"][0]["status"] == "delivered"
        retention = api.server.server.retention
        assert retention is not None
        api.clock.advance(2 * 86400)
        api.server.call(retention.run_once())
        after = client.get(f"/api/v1/messages/{sent['id']}").json()
    assert after["body_removed"] is True
    assert after["subject"] == "Hello"  # the log stays: subject, recipients, attempts
    assert after["recipients"] == before["recipients"]
    assert after["attempts"] == before["attempts"] != []
    config = write_config(tmp_path / "cli.toml", api.server.data_dir)
    shown = cli_out(config, "log", "show", sent["id"])
    assert "removed by retention (retention.bodies_days)" in shown

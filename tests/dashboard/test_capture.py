"""The capture mailer: with every route pointing at it, nothing leaves the machine, and
each message is kept whole for the dashboard and the API (as Mailpit does)."""

from __future__ import annotations

import re

import httpx

from postroom.directory import Admins
from postroom.directory.apikeys import Scope
from postroom.store.models import RecipientStatus
from tests.conftest import FakeClock
from tests.dashboard.conftest import ADMIN, PASSWORD, Dash
from tests.support.thread import MakeServer


def test_captured_mail_is_kept_and_shown_in_the_dashboard_and_the_api(
    make_server: MakeServer, fake_clock: FakeClock
) -> None:
    server = make_server(
        clock=fake_clock,
        deliver=True,
        mailers=[{"name": "capture", "type": "capture"}],
        routes=[{"name": "everything", "mailers": ["capture"]}],
    )
    server.call(Admins(server.store, fake_clock).add(ADMIN, PASSWORD))
    key = server.create_api_key("app", scopes=tuple(Scope))
    url = f"http://127.0.0.1:{server.api_port}"
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as api:
        sent = api.post(
            "/api/v1/messages",
            json={
                "from": "shop@example.com",
                "to": ["someone@example.net"],
                "subject": "Welcome <b>aboard</b>",
                "html": "<h1>Hello</h1><script>alert(1)</script>",
                "text": "Hello",
                "attachments": [
                    {"filename": "a.txt", "content_type": "text/plain", "content": "aGk="}
                ],
            },
        )
        assert sent.status_code == 202, sent.text
        queue_id = sent.json()["id"]
        server.run_delivery()
        assert server.statuses(queue_id) == [RecipientStatus.DELIVERED]
        attempts = server.call(server.store.attempts(queue_id))
        assert [(a.mailer, a.code, a.text) for a in attempts] == [
            ("capture", 250, "Captured: kept, not sent")
        ]
        listed = api.get("/api/v1/messages", params={"mailer": "capture"}).json()
        assert [m["id"] for m in listed["messages"]] == [queue_id]
        assert api.get("/api/v1/messages", params={"mailer": "mx"}).json()["messages"] == []
    dash = Dash(server, fake_clock, url)
    dash.login()
    page = dash.http.get("/dashboard/captured").text
    assert queue_id in page
    assert "Welcome &lt;b&gt;aboard&lt;/b&gt;" in page
    message = dash.http.get(f"/dashboard/messages/{queue_id}").text
    assert f"/messages/{queue_id}/preview" in message
    link = re.search(r'href="(/dashboard/messages/\w+/attachments/\d+)">a\.txt<', message)
    assert link is not None
    attachment = dash.http.get(link[1])
    assert attachment.status_code == 200
    assert attachment.content == b"hi"
    assert attachment.headers["content-disposition"] == 'attachment; filename="a.txt"'
    dash.http.close()


def test_without_a_capture_mailer_the_page_says_how_to_add_one(dash: Dash) -> None:
    dash.login()
    page = dash.http.get("/dashboard/captured").text
    assert 'type = "capture"' in page

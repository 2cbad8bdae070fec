"""The suppression list and webhooks pages: the same services as the CLI and the API,
every form with the CSRF token, over a real server."""

from __future__ import annotations

import html
import re

import pytest

from postroom.dashboard import eventpages
from postroom.directory.suppressions import Suppressions
from postroom.store.models import SuppressionReason, WebhookState
from tests.dashboard.conftest import Dash, MakeDash, csrf_of
from tests.support.http_fake import Reply, Request, serve
from tests.support.servers import wait_for


def _entries(dash: Dash) -> list[tuple[str, str, str, str]]:
    found = dash.server.call(Suppressions(dash.server.store).list(limit=100))
    return [(e.address, e.scope, e.reason.value, e.detail) for e in found]


def test_suppressions_are_added_with_reason_and_scope_and_removed(dash: Dash) -> None:
    dash.login()
    token = dash.csrf("/dashboard/suppressions")
    added = dash.http.post(
        "/dashboard/suppressions/add",
        data={
            "csrf": token,
            "address": "Carol@Example.NET",
            "scope": "Bücher.example",
            "reason": "complaint",
            "detail": "called us",
        },
    )
    assert added.status_code == 303
    assert _entries(dash) == [
        ("carol@example.net", "xn--bcher-kva.example", "complaint", "called us")
    ]
    page = dash.http.get(added.headers["location"]).text
    assert "carol@example.net suppressed for xn--bcher-kva.example" in html.unescape(page)
    assert "dashboard ada" in page  # the source: who added it
    bad = dash.http.post(
        "/dashboard/suppressions/add", data={"csrf": token, "address": "no-at-sign"}
    )
    assert "not a valid address" in html.unescape(dash.http.get(bad.headers["location"]).text)
    removed = dash.http.post(
        "/dashboard/suppressions/remove",
        data={"csrf": token, "address": "carol@example.net", "scope": "xn--bcher-kva.example"},
    )
    assert removed.status_code == 303 and _entries(dash) == []
    audit = dash.http.get("/dashboard/audit").text
    assert "suppression add" in audit and "suppression remove" in audit


def test_a_suppression_form_without_the_csrf_token_changes_nothing(dash: Dash) -> None:
    dash.login()
    for path in ("/dashboard/suppressions/add", "/dashboard/suppressions/remove"):
        answer = dash.http.post(path, data={"address": "bob@example.net"})
        assert answer.status_code == 403
    assert _entries(dash) == []


def test_the_suppression_list_searches_and_pages_by_keyset(
    dash: Dash, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = Suppressions(dash.server.store)
    for name in ("a", "b", "c"):
        dash.server.call(service.add(f"{name}@example.net", source="test"))
    dash.server.call(
        service.add(
            "a@example.net",
            scope="shop.example",
            reason=SuppressionReason.UNSUBSCRIBE,
            source="test",
        )
    )
    dash.login()
    monkeypatch.setattr(eventpages, "PAGE_SIZE", 2)
    first = dash.http.get("/dashboard/suppressions").text
    more = re.search(r'rel="next" href="\?([^"]+)"', first)
    assert more is not None
    second = dash.http.get(f"/dashboard/suppressions?{html.unescape(more[1])}").text
    rows = re.compile(r"<tr><td>([^<]+)</td><td>([^<]+)</td>")
    assert rows.findall(first) == [("a@example.net", "(global)"), ("a@example.net", "shop.example")]
    assert rows.findall(second) == [("b@example.net", "(global)"), ("c@example.net", "(global)")]
    assert 'rel="next"' not in second
    by_address = dash.http.get("/dashboard/suppressions", params={"address": "B@example.net"})
    assert rows.findall(by_address.text) == [("b@example.net", "(global)")]
    by_scope = dash.http.get("/dashboard/suppressions", params={"scope": "shop.example"})
    assert rows.findall(by_scope.text) == [("a@example.net", "shop.example")]
    only_global = dash.http.get("/dashboard/suppressions", params={"global": "1"}).text
    assert rows.findall(only_global) == [
        ("a@example.net", "(global)"),
        ("b@example.net", "(global)"),
    ]


def test_the_webhooks_page_shows_history_failures_and_sends_a_test(make_dash: MakeDash) -> None:
    seen: list[Request] = []

    def receiver(request: Request) -> Reply:
        seen.append(request)
        return Reply(204)

    with serve(receiver) as ok, serve(lambda r: Reply(500)) as broken:
        hooks = [
            {"name": "app", "url": f"{ok.url}/events", "secret": "s3cret"},
            {"name": "down", "url": f"{broken.url}/", "secret": "s3cret", "retry_for": 1},
        ]
        dash = make_dash(deliver=True, webhooks=hooks)
        queue_id = dash.send(b"Subject: hooked\r\n\r\nbody\r\n")

        def settled() -> bool:
            found = dash.server.call(dash.server.store.webhook_deliveries(limit=10))
            return len(found) >= 2 and all(d.state != WebhookState.PENDING for d in found)

        wait_for(settled)
        dash.login()
        page = dash.http.get("/dashboard/webhooks").text
        assert f'href="/dashboard/messages/{queue_id}"' in page
        assert "HTTP 500" in page  # the failed webhook's error, in its row and the history
        failed = dash.http.get("/dashboard/webhooks", params={"state": "failed"}).text
        assert "status-failed" in failed and "status-delivered" not in failed
        before = len(seen)
        tested = dash.http.post(
            "/dashboard/webhooks/test", data={"csrf": csrf_of(page), "name": "app"}
        )
        assert tested.status_code == 303
        assert len(seen) == before + 1 and seen[-1].json()["reason"] == "test"
        notice = html.unescape(dash.http.get(tested.headers["location"]).text)
        assert "webhook app answered 204 to test event ev_" in notice
        down = dash.http.post(
            "/dashboard/webhooks/test", data={"csrf": csrf_of(page), "name": "down"}
        )
        assert "test failed: HTTP 500" in html.unescape(
            dash.http.get(down.headers["location"]).text
        )
        assert "webhook test" in dash.http.get("/dashboard/audit").text

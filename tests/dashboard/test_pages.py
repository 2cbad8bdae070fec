"""The dashboard's pages over a real server: each renders, the log finds what it is
asked for, and nothing from a message is ever markup (XSS)."""

from __future__ import annotations

import html
import re
import socket
from typing import Any

import httpx
import pytest

from postroom.dashboard import pages
from postroom.directory.apikeys import Scope
from postroom.mail.events import EventOrigin, EventType, MailEvent, new_event_id
from postroom.store.models import WebhookState
from tests.dashboard.conftest import Dash, MakeDash
from tests.e2e.test_delivery_e2e import mx_settings
from tests.store.factories import attempt, delivered
from tests.support.dns_server import DnsServer
from tests.support.http_fake import Reply, Request, serve
from tests.support.servers import client_context, free_port, smtp_client, wait_for

# A subject, a From display name and bodies built to break out of HTML, as raw text and
# inside RFC 2047 encoded words (which decode to markup only after parsing).
HOSTILE = (
    b"From: =?utf-8?q?=3Cscript=3Ealert(1)=3C/script=3E?= <shop@example.com>\r\n"
    b"To: bob@example.test\r\n"
    b'Subject: "><img src=x onerror=alert(2)> =?utf-8?b?PHNjcmlwdD5hbGVydCgzKTwvc2NyaXB0Pg==?=\r\n'
    b"X-Trick: <svg onload=alert(4)>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b"\r\n'
    b"\r\n--b\r\nContent-Type: text/plain\r\n\r\n</pre><script>alert(5)</script>\r\n"
    b"--b\r\nContent-Type: text/html\r\n\r\n<p>hi</p><script>alert(6)</script>"
    b'<img src="https://tracker.example/p.gif">\r\n--b--\r\n'
)


def _no_markup_from_the_message(page: str) -> None:
    for needle in ("<script>alert", "<img src=x", "<svg onload", "onerror=alert(2)>"):
        assert needle not in page, needle
    # the dashboard's own script is the only script element
    assert re.findall(r"<script[^>]*>", page) == [
        '<script src="/dashboard/static/dashboard.js" defer>'
    ]


def test_every_page_renders_for_a_logged_in_admin(dash: Dash) -> None:
    queue_id = dash.send(b"Subject: plain\r\n\r\nhello\r\n")
    dash.login()
    for path in (
        "/dashboard/",
        "/dashboard/?span=hour",
        "/dashboard/?span=week",
        "/dashboard/log",
        f"/dashboard/messages/{queue_id}",
        "/dashboard/queue?status=queued",
        "/dashboard/queue?status=held",
        "/dashboard/mailers",
        "/dashboard/mailers?to=someone%40example.net",
        "/dashboard/domains",
        "/dashboard/captured",
        "/dashboard/test",
        "/dashboard/keys",
        "/dashboard/suppressions",
        "/dashboard/webhooks",
        "/dashboard/audit",
    ):
        answer = dash.http.get(path)
        assert answer.status_code == 200, path
        assert 'id="main"' in answer.text


def test_hostile_subject_names_headers_and_bodies_are_shown_as_text(dash: Dash) -> None:
    queue_id = dash.send(HOSTILE)
    dash.login()
    log = dash.http.get("/dashboard/log").text
    _no_markup_from_the_message(log)
    page = dash.http.get(f"/dashboard/messages/{queue_id}").text
    _no_markup_from_the_message(page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the decoded From name, as text
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in page  # the decoded encoded word
    assert "&lt;/pre&gt;&lt;script&gt;alert(5)" in page  # the text body
    assert f'src="/dashboard/messages/{queue_id}/preview"' in page
    assert 'sandbox=""' in page


def test_the_html_preview_runs_no_script_and_loads_nothing_remote(dash: Dash) -> None:
    queue_id = dash.send(HOSTILE)
    dash.login()
    preview = dash.http.get(f"/dashboard/messages/{queue_id}/preview")
    assert preview.status_code == 200
    policy = preview.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src" not in policy  # default-src 'none' covers scripts
    assert "sandbox" in policy
    assert "img-src data: cid:;" in policy  # no remote images until asked
    remote = dash.http.get(f"/dashboard/messages/{queue_id}/preview?remote=1")
    assert "https:" in remote.headers["content-security-policy"]
    assert "sandbox" in remote.headers["content-security-policy"]


def test_the_raw_message_downloads_as_eml(dash: Dash) -> None:
    queue_id = dash.send(HOSTILE)
    dash.login()
    raw = dash.http.get(f"/dashboard/messages/{queue_id}/raw")
    assert raw.headers["content-type"] == "message/rfc822"
    assert raw.headers["content-disposition"] == f'attachment; filename="{queue_id}.eml"'
    assert HOSTILE.split(b"\r\n\r\n")[1] in raw.content


def test_the_log_filters_by_recipient_and_finds_a_queue_id(dash: Dash) -> None:
    first = dash.send(b"Subject: one\r\n\r\n1\r\n", to="bob@example.test")
    dash.server.add_user("carol@example.test", "carol-password")
    second = dash.send(b"Subject: two\r\n\r\n2\r\n", to="carol@example.test")
    dash.login()
    found = dash.http.get("/dashboard/log", params={"to": "carol"}).text
    assert second in found and first not in found
    assert "<td>two</td>" in found  # the Subject, read from the stored header block
    jump = dash.http.get("/dashboard/log", params={"id": first})
    assert jump.headers["location"] == f"/dashboard/messages/{first}"
    assert dash.http.get("/dashboard/log", params={"id": "NOPE"}).status_code == 404


def test_the_log_pages_by_keyset(dash: Dash, monkeypatch: pytest.MonkeyPatch) -> None:
    newest_first = sorted((dash.send(b"Subject: n\r\n\r\nx\r\n") for _ in range(3)), reverse=True)
    dash.login()
    monkeypatch.setattr(pages, "PAGE_SIZE", 2)
    first = dash.http.get("/dashboard/log").text
    older = re.search(r'href="\?after=([^"]+)"', first)
    assert older is not None and older[1] == newest_first[1]  # the last id shown
    second = dash.http.get("/dashboard/log", params={"after": older[1]}).text
    assert newest_first[0] in first and newest_first[1] in first
    assert newest_first[2] not in first
    assert newest_first[2] in second and newest_first[1] not in second
    assert "after=" not in second  # the end


def test_resend_queues_a_new_copy_through_intake_and_logs_who(dash: Dash) -> None:
    queue_id = dash.send(b"Subject: again\r\n\r\nbody\r\n")
    dash.login()
    answer = dash.http.post(f"/dashboard/messages/{queue_id}/resend", data={"csrf": dash.csrf()})
    assert answer.status_code == 303
    copy_id = answer.headers["location"].split("/messages/")[1].split("?")[0]
    assert copy_id != queue_id
    copy = dash.server.call(dash.server.store.message(copy_id))
    assert copy is not None
    assert [r.address for r in copy.recipients] == ["bob@example.test"]
    assert copy.sender == "shop@example.com"
    body = dash.server.call(dash.server.store.read_body(copy_id))
    assert body is not None and b"Subject: again" in body
    (action,) = dash.server.call(dash.server.store.admin_actions(limit=1))
    assert (action.action, action.target) == ("resend", f"{queue_id} as {copy_id}")


def test_the_domain_check_reports_in_the_page_without_reaching_the_internet(dash: Dash) -> None:
    dash.login()
    page = dash.http.get("/dashboard/domains", params={"check": "example.test"})
    assert page.status_code == 200
    # the test resolver answers nothing: the page says the check failed, in one line
    assert "Check failed" in page.text, page.text


def test_the_mailers_page_shows_each_api_mailers_limit_usage(make_dash: MakeDash) -> None:
    dash = make_dash(
        mailers=[
            {"name": "grid", "type": "sendgrid", "api_key": "SG.test", "limits": {"per_hour": 100}}
        ]
    )
    dash.login()
    page = dash.http.get("/dashboard/mailers").text
    assert "0 of 100 per hour (until" in page


def test_a_filtered_search_reads_a_window_of_messages_and_links_to_older_ones(
    dash: Dash, monkeypatch: pytest.MonkeyPatch
) -> None:
    oldest, *newer = sorted(dash.send(b"Subject: n\r\n\r\nx\r\n") for _ in range(3))
    assert dash.server.call(dash.server.store.hold(oldest))
    dash.login()
    monkeypatch.setattr(pages, "SEARCH_WINDOW", 2)
    first = dash.http.get("/dashboard/log", params={"status": "held"}).text
    assert oldest not in first and "Searched the 2 messages back to" in first
    older = re.search(r'href="\?status=held&amp;after=([^"]+)"', first)
    assert older is not None and older[1] == min(newer)  # on below the messages read
    second = dash.http.get("/dashboard/log", params={"status": "held", "after": older[1]}).text
    assert oldest in second
    # A recipient search has indexes: it reads the whole log at once.
    found = dash.http.get("/dashboard/log", params={"to": "bob@"}).text
    assert all(queue_id in found for queue_id in (oldest, *newer))


def test_the_overview_counts_sent_through_a_relay_apart_from_delivered_and_complaints(
    make_dash: MakeDash,
) -> None:
    dash = make_dash(mailers=[{"name": "keep", "type": "capture"}])
    store, now = dash.server.store, dash.clock.time()
    kept, direct = (dash.send(b"Subject: s\r\n\r\nx\r\n") for _ in range(2))
    dash.server.call(
        store.record_outcomes(
            kept,
            [delivered("bob@example.test")],
            [attempt(kept, "bob@example.test", now, mailer="keep")],
        )
    )
    dash.server.call(
        store.record_outcomes(
            direct,
            [delivered("bob@example.test")],
            [attempt(direct, "bob@example.test", now, mailer="mx")],
        )
    )
    complaint = MailEvent(
        id=new_event_id(),
        type=EventType.COMPLAINED,
        at=now,
        recipient="bob@example.test",
        queue_id=kept,
        mailer="keep",
        origin=EventOrigin.PROVIDER,
    )
    dash.server.call(store.record_events([complaint]))
    dash.login()
    page = dash.http.get("/dashboard/", params={"span": "hour"}).text
    head = re.search(r"<thead><tr><th scope=\"col\">Mailer</th>(.*?)</tr></thead>", page)
    assert head is not None
    assert re.findall(r">(\w+)</th>", head[1]) == [
        "Sent",
        "Delivered",
        "Deferred",
        "Bounced",
        "Complained",
    ]
    rows = dict(re.findall(r'<th scope="row">([^<]+)</th>((?:<td>\d+</td>)+)</tr>', page))
    numbers = {name: [int(n) for n in re.findall(r"\d+", cells)] for name, cells in rows.items()}
    assert numbers["keep"] == [1, 0, 0, 0, 1]  # a capture hands on: "sent", as its event is
    assert numbers["mx"] == [0, 1, 0, 0, 0]
    assert numbers["example.com"] == [1, 1, 0, 0, 1]  # the sender domain's row
    assert "1 complained" in page  # the chart's bar


def test_the_timeline_shows_the_dsn_sent_the_webhooks_and_each_smtp_attempts_dkim(
    make_dash: MakeDash,
) -> None:
    seen: list[Request] = []

    def receiver(request: Request) -> Reply:
        seen.append(request)
        return Reply(204)

    with DnsServer() as dns, serve(receiver) as hooks:  # no zone: every name is NXDOMAIN
        settings: dict[str, Any] = mx_settings(dns, free_port())
        dash = make_dash(
            deliver=True,
            webhooks=[{"name": "app", "url": f"{hooks.url}/", "secret": "s3cret"}],
            **settings,
        )
        with smtp_client(dash.server.ports["submission"]) as client:
            client.starttls(context=client_context(dash.server.data_dir))
            client.login("bob@example.test", "bob-password")
            client.sendmail(
                "bob@example.test", ["carol@nowhere.example"], b"Subject: x\r\n\r\nx\r\n"
            )
        store = dash.server.store

        def bounced_and_told() -> bool:
            found = dash.server.call(store.messages(limit=10))
            return (
                len(found) == 2
                and not dash.server.call(
                    store.webhook_deliveries(state=WebhookState.PENDING, limit=10)
                )
                and len(dash.server.call(store.webhook_deliveries(limit=10))) >= 4
            )

        wait_for(bounced_and_told)
        messages = dash.server.call(store.messages(limit=10))
        (original,) = [m for m in messages if m.source_kind == "smtp"]
        (dsn,) = [m for m in messages if m.source_kind == "dsn"]
        dash.login()
        page = html.unescape(dash.http.get(f"/dashboard/messages/{original.id}").text)
    assert f'DSN sent</strong> to bob@example.test: <a href="/dashboard/messages/{dsn.id}">' in page
    assert "through mx" in page and "; DKIM: not signed" in page  # example.test has no key
    assert "Webhook</strong> app: event queued for carol@nowhere.example" in page
    assert "Webhook</strong> app: event bounced for carol@nowhere.example" in page
    dsn_page = dash.http.get(f"/dashboard/messages/{dsn.id}").text
    assert "DSN sent" not in dsn_page and "DKIM:" not in dsn_page  # delivered by "local"
    # The route each attempt took, as recorded then; the DSN links back to its message.
    assert (
        "route <em>default-remote</em>: default: no routes are configured, and"
        " 'nowhere.example' is not a local domain"
    ) in page
    assert "route <em>default-local</em>" in dsn_page
    assert f'DSN about</strong> <a href="/dashboard/messages/{original.id}">' in dsn_page


def test_the_timeline_shows_the_route_each_attempt_took_and_why_it_failed_over(
    make_dash: MakeDash,
) -> None:
    with socket.socket() as probe:  # a port nothing listens on once this closes
        probe.bind(("127.0.0.1", 0))
        closed = int(probe.getsockname()[1])
    dash = make_dash(
        deliver=True,
        mailers=[{"name": "relay", "type": "smtp", "host": "127.0.0.1", "port": closed,
                  "tls": "none", "connect_timeout": 2}],
        routes=[{"name": "bob-first", "mailers": ["relay", "local"],
                 "conditions": [{"field": "recipient", "value": "bob@example.test"}]}],
    )  # fmt: skip
    queue_id = dash.send(b"Subject: s\r\n\r\nx\r\n")
    dash.server.run_delivery()
    dash.login()
    page = html.unescape(dash.http.get(f"/dashboard/messages/{queue_id}").text)
    assert "route <em>bob-first</em>: matched recipient equals 'bob@example.test'" in page
    assert "route <em>bob-first</em>: failover after relay failed: 4" in page
    (first, second) = dash.server.call(dash.server.store.attempts(queue_id))
    assert (first.mailer, first.disposition, second.mailer, second.disposition) == (
        "relay",
        "deferred",
        "local",
        "delivered",
    )
    assert second.route_reason == f"failover after relay failed: {first.code} {first.enhanced}" + (
        f" {first.text}"
    )
    # The email log's API carries the same.
    token = dash.server.create_api_key("reader", scopes=(Scope.READ_ALL,))
    answer = httpx.get(
        f"{dash.url}/api/v1/messages/{queue_id}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert [(a["route"], a["route_reason"]) for a in answer.json()["attempts"]] == [
        ("bob-first", first.route_reason),
        ("bob-first", second.route_reason),
    ]


def test_an_attempt_recorded_before_routes_were_kept_says_so_rather_than_guess(
    dash: Dash,
) -> None:
    queue_id = dash.send(b"Subject: old\r\n\r\nx\r\n")
    old = attempt(queue_id, "bob@example.test", dash.clock.time())  # no route, as before
    dash.server.call(
        dash.server.store.record_outcomes(queue_id, [delivered("bob@example.test")], [old])
    )
    dash.login()
    page = dash.http.get(f"/dashboard/messages/{queue_id}").text
    assert "route not recorded" in page
    assert "as the routes are configured now" not in page  # no recipient is waiting

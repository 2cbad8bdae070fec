"""Tracking and List-Unsubscribe through the API: an HTML message sent with ``track`` and
``unsubscribe``, its pixel, a link and its one-click unsubscribe fetched with curl."""

from __future__ import annotations

import email
import email.policy
import itertools
import json
import re
import subprocess
from email.message import EmailMessage

import dkim
import pytest

from postroom.mail.events import EventOrigin, EventType, MailEvent
from postroom.mailauth.dkim import KeyRing
from postroom.store.models import SuppressionReason
from tests.support.thread import MakeServer, ServerThread

BASE = "https://t.example.com/mail"
GOOGLE_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
HTML = '<html><body><p>Hi! <a href="https://shop.example/offer?id=7&amp;x=1">Offer</a></p></body></html>'


@pytest.fixture
def srv(make_server: MakeServer) -> ServerThread:
    server: ServerThread = make_server(tracking={"base_url": BASE})
    server.add_domain("example.test")
    return server


def curl(srv: ServerThread, url: str, *args: str) -> tuple[int, dict[str, str], bytes]:
    """Fetch ``url`` from the API with curl (a proxy at ``BASE`` strips its path, as one
    in front of postroom would): status, headers, body."""
    path = url.removeprefix(BASE)
    done = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--include",
            *args,
            f"http://127.0.0.1:{srv.api_port}{path}",
        ],
        capture_output=True,
        check=True,
        timeout=30,
    )
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


_KEYS = itertools.count()


def send(srv: ServerThread, **fields: object) -> tuple[str, EmailMessage]:
    token = srv.create_api_key(f"app{next(_KEYS)}")  # a key per message: names are unique
    request = {
        "from": "app@example.test",
        "to": "reader@remote.test",
        "subject": "Offer",
        "text": "Hi!",
        "html": HTML,
        **fields,
    }
    done = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--fail-with-body",
            "-H",
            f"Authorization: Bearer {token}",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            json.dumps(request),
            f"http://127.0.0.1:{srv.api_port}/api/v1/messages",
        ],
        capture_output=True,
        check=True,
        timeout=30,
    )
    queue_id = json.loads(done.stdout)["id"]
    data = srv.call(srv.store.read_body(queue_id))
    assert data is not None
    parsed = email.message_from_bytes(data, policy=email.policy.SMTP)
    assert isinstance(parsed, EmailMessage)
    return queue_id, parsed


def html_of(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def events(srv: ServerThread, queue_id: str, kind: EventType) -> list[MailEvent]:
    return [e for e in srv.call(srv.store.events(queue_id)) if e.type is kind]


def test_pixel_and_link_fetched_with_curl_are_recorded_and_a_prefetcher_is_machine(
    srv: ServerThread,
) -> None:
    queue_id, message = send(srv, track=True)

    assert "X-Postroom-Track" not in message  # the request field is never sent on
    assert "Auto-Submitted" not in message
    html = html_of(message)
    pixel = re.search(r'<img src="(https://t\.example\.com/mail/t/o/[^"]+)"', html)
    link = re.search(r'<a href="(https://t\.example\.com/mail/t/c/[^"]+)"', html)
    assert pixel is not None and link is not None
    assert "shop.example" not in html  # the destination is inside the signed token

    status, headers, body = curl(srv, pixel.group(1), "-A", FIREFOX)
    assert (status, headers["content-type"]) == (200, "image/gif")
    assert body.startswith(b"GIF89a")
    status, headers, _ = curl(srv, link.group(1), "-A", FIREFOX)
    assert (status, headers["location"]) == (302, "https://shop.example/offer?id=7&x=1")
    curl(srv, pixel.group(1), "-A", GOOGLE_PROXY)

    human, proxy = events(srv, queue_id, EventType.OPENED)
    (click,) = events(srv, queue_id, EventType.CLICKED)
    assert human.recipient == "reader@remote.test" and human.origin is EventOrigin.TRACKING
    assert dict(human.details)["machine"] == "false"
    assert dict(proxy.details)["machine"] == "true"
    assert dict(proxy.details)["machine_reason"] == "user-agent"
    assert dict(click.details)["url"] == "https://shop.example/offer?id=7&x=1"


def test_a_changed_token_is_not_found_and_records_nothing(srv: ServerThread) -> None:
    queue_id, message = send(srv, track=["clicks"])
    html = html_of(message)
    assert "/t/o/" not in html  # clicks only: no pixel
    link = re.search(r'<a href="(https://t\.example\.com/mail/t/c/[^"]+)"', html)
    assert link is not None
    forged = link.group(1)[:-3] + ("AAA" if not link.group(1).endswith("AAA") else "BBB")

    status, _, body = curl(srv, forged)

    assert status == 404 and json.loads(body)["error"]["status"] == 404
    assert events(srv, queue_id, EventType.CLICKED) == []


def test_one_click_unsubscribe_suppresses_the_recipient_for_the_sender_domain(
    srv: ServerThread,
) -> None:
    queue_id, message = send(srv, unsubscribe=True)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    found = re.fullmatch(r"<(https://t\.example\.com/mail/t/u/[^>]+)>", message["List-Unsubscribe"])
    assert found is not None
    url = found.group(1)

    status, _, page = curl(srv, url)  # a GET (a link scanner) changes nothing
    assert status == 200 and b'<form method="post">' in page
    assert srv.call(srv.store.suppressions(address="reader@remote.test")) == []

    status, _, _ = curl(srv, url, "--data", "List-Unsubscribe=One-Click")
    assert status == 200
    (entry,) = srv.call(srv.store.suppressions(address="reader@remote.test"))
    assert (entry.scope, entry.reason) == ("example.test", SuppressionReason.UNSUBSCRIBE)
    (event,) = events(srv, queue_id, EventType.UNSUBSCRIBED)
    assert event.recipient == "reader@remote.test" and event.reason == "one-click"
    curl(srv, url, "--data", "List-Unsubscribe=One-Click")  # again: no second event
    assert len(events(srv, queue_id, EventType.UNSUBSCRIBED)) == 1


def test_a_route_with_track_rewrites_its_mail_before_dkim_and_another_route_does_not(
    make_server: MakeServer,
) -> None:
    routes = [
        {
            "name": "news",
            "mailers": ["mx"],
            "track": ["opens", "clicks"],
            "conditions": [{"field": "header", "header": "X-Stream", "value": "news"}],
        },
        {"name": "receipts", "mailers": ["mx"], "track": []},
    ]
    srv: ServerThread = make_server(tracking={"base_url": BASE, "default": "yes"}, routes=routes)
    srv.add_domain("example.test")
    key = KeyRing(srv.data_dir).generate("example.test", "r1", "rsa", 1024)

    def verifies(message: EmailMessage) -> bool:
        def txt(name: bytes, timeout: float = 5) -> bytes | None:
            return key.record().encode() if name.decode().rstrip(".") == key.record_name else None

        return bool(dkim.DKIM(message.as_bytes()).verify(dnsfunc=txt))

    _, news = send(srv, headers={"X-Stream": "news"})
    news_html = html_of(news)
    assert f"{BASE}/t/c/" in news_html and "shop.example" not in news_html
    assert f'<img src="{BASE}/t/o/' in news_html
    assert news["DKIM-Signature"] is not None and verifies(news)

    # "track = []" says no, over [tracking] default; a message's own request wins over both.
    _, receipt = send(srv, headers={"X-Stream": "receipts"})
    assert "/t/" not in html_of(receipt) and "shop.example/offer" in html_of(receipt)
    assert verifies(receipt)
    _, asked = send(srv, headers={"X-Stream": "receipts"}, track=["clicks"])
    assert f"{BASE}/t/c/" in html_of(asked) and "/t/o/" not in html_of(asked)
    assert verifies(asked)


def test_recipients_whose_routes_disagree_get_only_the_tracking_all_agree_on(
    make_server: MakeServer,
) -> None:
    routes = [
        {
            "name": "opens-only",
            "mailers": ["mx"],
            "track": ["opens"],
            "conditions": [{"field": "recipient_domain", "value": "a.test"}],
        },
        {"name": "both", "mailers": ["mx"], "track": ["opens", "clicks"]},
    ]
    srv: ServerThread = make_server(tracking={"base_url": BASE}, routes=routes)
    srv.add_domain("example.test")
    _, mixed = send(srv, to=["x@a.test", "y@b.test"])
    assert "/t/o/" in html_of(mixed) and "/t/c/" not in html_of(mixed)
    _, both = send(srv, to=["y@b.test"])
    assert "/t/o/" in html_of(both) and "/t/c/" in html_of(both)

"""The dashboard in a real browser: Debian's chromium driven by Playwright (never a
downloaded browser). One server and one browser for the module; each test is a task an
operator does. Every page visited is screenshotted into test-artifacts/dashboard/ and
checked with axe-core (no serious or critical violation); a message built to run
script in the subject, From name and body runs none."""

from __future__ import annotations

import json
import os
import re
import shutil
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from postroom.clock import SystemClock
from postroom.directory import Admins
from postroom.mailauth.dkim import KeyRing
from postroom.store.models import StoredMessage
from tests.dashboard.conftest import ADMIN, PASSWORD
from tests.dashboard.test_pages import HOSTILE
from tests.support.servers import client_context, loopback_settings, smtp_client, wait_for
from tests.support.smtp_peers import SmtpPeer
from tests.support.thread import ServerThread

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"


def _need(found: object, what: str) -> None:
    if not found:
        if os.environ.get("CI"):
            pytest.fail(f"{what} missing: .ci/run installs it")
        pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    # Mail to refused.example takes a route to a loopback relay that refuses it: a bounce,
    # and a DSN to the sender.
    with SmtpPeer("127.0.0.1", data_reply="550 5.7.1 Refused here") as refuser:
        settings = loopback_settings(
            tmp_path_factory.mktemp("dash"),
            mailers=[{"name": "refuser", "type": "smtp", "host": "127.0.0.1",
                      "port": refuser.port, "tls": "none"}],
            routes=[{"name": "refused", "mailers": ["refuser"],
                     "conditions": [{"field": "recipient_domain", "value": "refused.example"}]}],
        )  # fmt: skip
        srv = ServerThread(settings, deliver=True).start()
        srv.add_domain("example.test")
        srv.add_user("bob@example.test", "bob-password")
        srv.call(Admins(srv.store, SystemClock()).add(ADMIN, PASSWORD))
        KeyRing(settings.data_dir).generate("example.test", "e1", "ed25519")
        yield srv
        srv.stop()


@pytest.fixture(scope="module")
def page(server: ServerThread) -> Iterator[Page]:
    chromium = shutil.which("chromium")
    _need(chromium, "chromium (apt-get install chromium)")
    _need(AXE.is_file(), "axe-core (npm install --prefix tests/dashboard)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context(base_url=f"http://127.0.0.1:{server.api_port}")
        tab = context.new_page()
        tab.on("dialog", lambda dialog: dialog.dismiss())  # an alert() would be a script run
        yield tab
        context.close()
        browser.close()


def _check(page: Page, name: str) -> None:
    """Screenshot the page, and fail on serious or critical axe-core violations."""
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    # evaluated through the driver, not as a <script>: the page's CSP refuses inline script
    page.evaluate(AXE.read_text("utf-8"))
    found = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => ({id: v.id, help: v.help, nodes: v.nodes.map(n => n.html).slice(0, 3)}))"
    )
    assert found == [], json.dumps(found, indent=1)


def _send(server: ServerThread, message: bytes, to: str = "bob@example.test") -> str:
    before = {m.id for m in server.call(server.store.messages(limit=10_000))}
    with smtplib.SMTP("127.0.0.1", server.ports["mx"], timeout=10) as smtp:
        smtp.sendmail("shop@example.com", [to], message)
    (new,) = {m.id for m in server.call(server.store.messages(limit=10_000))} - before
    return new


def test_1_log_in(page: Page) -> None:
    page.goto("/dashboard/")
    assert page.url.endswith("/dashboard/login")
    _check(page, "login")
    page.get_by_label("Name").fill(ADMIN)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
    assert page.url.endswith("/dashboard/"), page.content()
    assert page.get_by_role("heading", name="Overview").is_visible()
    _check(page, "overview")


def test_2_search_the_log_and_open_a_timeline(page: Page, server: ServerThread) -> None:
    queue_id = _send(server, b"Subject: invoice 7\r\n\r\nhello\r\n")
    _send(server, b"Subject: other\r\n\r\nhello\r\n", to="postmaster@example.test")
    page.goto("/dashboard/log")
    page.get_by_label("Recipient").fill("bob@")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r".*to=bob%40.*"))
    _check(page, "log")
    page.get_by_role("link", name=queue_id).click()
    page.wait_for_url(f"**/messages/{queue_id}")
    timeline = page.locator(".timeline")
    assert "Accepted" in timeline.inner_text()
    page.wait_for_function("document.querySelector('.timeline') !== null")
    _check(page, "message")


def test_3_hold_and_release(page: Page, server: ServerThread) -> None:
    queue_id = _send(server, b"Subject: hold me\r\n\r\nx\r\n")
    page.goto(f"/dashboard/messages/{queue_id}")
    page.get_by_role("button", name="Hold").click()
    page.wait_for_url(re.compile(r".*notice=hold.*"))
    message = server.call(server.store.message(queue_id))
    assert message is not None and message.held
    page.get_by_role("button", name="Release").click()
    page.wait_for_url(re.compile(r".*notice=release.*"))
    message = server.call(server.store.message(queue_id))
    assert message is not None and not message.held
    page.goto("/dashboard/queue?status=held")
    _check(page, "queue")


def test_4_send_a_test_email_and_see_its_result(page: Page) -> None:
    page.goto("/dashboard/test")
    _check(page, "test-email")
    page.get_by_label("To").fill("bob@example.test")
    page.get_by_role("button", name="Send").click()
    page.wait_for_url(re.compile(r".*/dashboard/test/\w+$"))
    # the page reloads itself until the attempt is recorded
    page.locator(".result .status-delivered").wait_for(timeout=30_000)
    assert "through local" in page.locator(".timeline").inner_text()
    _check(page, "test-result")


def test_5_rotate_a_dkim_key(page: Page) -> None:
    page.goto("/dashboard/domains")
    page.get_by_role("button", name="Rotate DKIM keys of example.test").click()
    page.wait_for_url(re.compile(r".*notice=new.*"))
    assert page.get_by_text("waiting").count() == 1  # the new key, until activated
    _check(page, "domains")


def test_6_a_hostile_message_runs_no_script(page: Page, server: ServerThread) -> None:
    queue_id = _send(server, HOSTILE)
    ran: list[str] = []
    page.on("dialog", lambda dialog: ran.append(dialog.message))
    page.goto("/dashboard/log?to=bob")
    page.goto(f"/dashboard/messages/{queue_id}")
    page.frame_locator("iframe.preview").locator("p").wait_for()
    assert page.get_by_text("<script>alert(1)</script>", exact=False).count() >= 1
    assert ran == []
    # nothing from the message reached the DOM as an element
    assert page.locator("img[src=x], svg[onload]").count() == 0
    _check(page, "hostile-message")


def test_6_the_timeline_shows_the_route_taken_and_links_a_bounce_and_its_dsn(
    page: Page, server: ServerThread
) -> None:
    with smtp_client(server.ports["submission"]) as client:
        client.starttls(context=client_context(server.data_dir))
        client.login("bob@example.test", "bob-password")
        client.sendmail("bob@example.test", ["ann@refused.example"], b"Subject: no\r\n\r\nx\r\n")

    def dsns() -> list[StoredMessage]:
        return [m for m in server.call(server.store.messages(limit=1000)) if m.dsn_of]

    wait_for(lambda: len(dsns()) == 1)
    (dsn,) = dsns()
    assert dsn.dsn_of is not None
    page.goto(f"/dashboard/messages/{dsn.dsn_of}")
    timeline = page.locator(".timeline")
    assert "route refused: matched recipient_domain equals 'refused.example'" in (
        timeline.inner_text()
    )
    _check(page, "message-bounced")
    page.get_by_role("link", name=dsn.id).click()
    page.wait_for_url(f"**/messages/{dsn.id}")
    assert "route default-local: default:" in page.locator(".timeline").inner_text()
    page.get_by_role("link", name=dsn.dsn_of).click()  # "DSN about" its message
    page.wait_for_url(f"**/messages/{dsn.dsn_of}")
    page.goto(f"/dashboard/messages/{dsn.id}")
    _check(page, "message-dsn")


def test_7_other_pages_pass_axe(page: Page) -> None:
    for name in ("mailers", "keys", "suppressions", "webhooks", "audit", "captured"):
        page.goto(f"/dashboard/{name}")
        _check(page, name)


def test_7_the_navigation_leads_to_the_suppression_list_and_webhooks(page: Page) -> None:
    page.goto("/dashboard/")
    nav = page.get_by_role("navigation", name="Dashboard")
    nav.get_by_role("link", name="Suppression list").click()
    page.wait_for_load_state()
    assert page.url.endswith("/dashboard/suppressions")
    assert page.get_by_role("heading", name="Suppression list", exact=True).is_visible()
    nav.get_by_role("link", name="Webhooks").click()
    page.wait_for_load_state()
    assert page.url.endswith("/dashboard/webhooks")
    assert nav.get_by_role("link", name="Webhooks").get_attribute("aria-current") == "page"


def test_8_pages_fit_a_phone(page: Page) -> None:
    page.set_viewport_size({"width": 375, "height": 740})
    try:
        for name in ("", "log", "queue", "test"):
            page.goto(f"/dashboard/{name}")
            # nothing wider than the screen: only tables scroll, inside themselves
            assert page.evaluate("document.documentElement.scrollWidth") <= 375, name
            page.screenshot(path=str(ARTIFACTS / f"phone-{name or 'overview'}.png"))
    finally:
        page.set_viewport_size({"width": 1280, "height": 800})

"""Who gets into the dashboard: admins only, by a signed session cookie with idle
expiry, CSRF on every form, failed logins counted in the AUTH throttle, and every
answer under a Content-Security-Policy that forbids framing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from postroom.dashboard import Dashboard, dashboard_key
from postroom.errors import PostroomError
from postroom.store.models import RecipientStatus
from tests.dashboard.conftest import ADMIN, Dash, MakeDash, csrf_of

MESSAGE = b"From: shop@example.com\r\nTo: bob@example.test\r\nSubject: hi\r\n\r\nbody\r\n"


def _mounted(dash: Dash) -> Dashboard:
    api = dash.server.server.api
    assert api is not None and isinstance(api.app, Starlette)
    (mounted,) = [r.app for r in api.app.routes if isinstance(r, Mount) and r.path == "/dashboard"]
    assert isinstance(mounted, Dashboard)
    return mounted


def test_the_dashboards_pages_are_built_at_its_first_request_then_kept(dash: Dash) -> None:
    assert _mounted(dash).app is None  # a server never browsed carries none of the pages
    with ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(lambda _: httpx.get(f"{dash.url}/dashboard/login", timeout=10), range(4))
        )
    assert [a.status_code for a in answers] == [200] * 4
    built = _mounted(dash).app
    assert built is not None
    assert dash.login().status_code == 303
    assert dash.http.get("/dashboard/").status_code == 200
    assert _mounted(dash).app is built


def test_the_dashboard_is_off_until_an_admin_exists(make_dash: MakeDash) -> None:
    dash = make_dash(admin=False)
    answer = dash.http.get("/dashboard/login")
    assert answer.status_code == 404
    assert "postroom admin add" in answer.text
    assert dash.http.get("/dashboard/log").status_code == 404


def test_pages_send_a_visitor_without_a_session_to_the_login_page(dash: Dash) -> None:
    for path in ("/dashboard/", "/dashboard/log", "/dashboard/queue", "/dashboard/keys"):
        answer = dash.http.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/dashboard/login"
    assert dash.http.get("/").headers["location"] == "/dashboard/"


def test_login_sets_a_strict_httponly_session_cookie_and_records_it(dash: Dash) -> None:
    answer = dash.login()
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"].lower()
    assert "postroom_session=" in cookie
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "path=/dashboard" in cookie
    assert "secure" not in cookie  # plain http here; behind TLS it is Secure
    assert dash.http.get("/dashboard/").status_code == 200
    actions = dash.server.call(dash.server.store.admin_actions(limit=5))
    assert [(a.admin, a.action) for a in actions] == [(ADMIN, "login")]


def test_a_wrong_password_is_refused_without_saying_which_part_was_wrong(dash: Dash) -> None:
    wrong = dash.login(password="nope")
    unknown = dash.login(name="nobody")
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong name or password" in wrong.text
    assert "postroom_session" not in wrong.headers.get("set-cookie", "")
    assert dash.http.get("/dashboard/").status_code == 303


def test_failed_logins_are_throttled_with_the_auth_throttle(dash: Dash) -> None:
    limit = dash.server.settings.limits.auth.max_failures
    for _ in range(limit):
        assert dash.login(password="guess").status_code == 401
    # the right password is not even checked now
    assert dash.login().status_code == 429
    dash.clock.advance(dash.server.settings.limits.auth.window + 1)
    assert dash.login().status_code == 303


def test_a_login_post_without_the_form_token_is_refused(dash: Dash) -> None:
    dash.http.get("/dashboard/login")
    answer = dash.http.post("/dashboard/login", data={"name": ADMIN, "password": "x"})
    assert answer.status_code == 403
    assert "postroom_session" not in answer.headers.get("set-cookie", "")


def test_a_form_post_without_the_csrf_token_is_refused(dash: Dash) -> None:
    queue_id = dash.send(MESSAGE)
    dash.login()
    no_token = dash.http.post(f"/dashboard/messages/{queue_id}/hold", data={})
    wrong = dash.http.post(f"/dashboard/messages/{queue_id}/hold", data={"csrf": "forged"})
    assert no_token.status_code == wrong.status_code == 403
    message = dash.server.call(dash.server.store.message(queue_id))
    assert message is not None and not message.held
    token = dash.csrf()
    other_site = dash.http.post(
        f"/dashboard/messages/{queue_id}/hold",
        data={"csrf": token},
        headers={"Origin": "https://evil.example"},
    )
    assert other_site.status_code == 403
    behind_a_proxy = dash.http.post(
        f"/dashboard/messages/{queue_id}/release",
        data={"csrf": token},
        headers={"Origin": "https://mail.example", "X-Forwarded-Host": "mail.example"},
    )
    assert behind_a_proxy.status_code == 303
    ok = dash.http.post(f"/dashboard/messages/{queue_id}/hold", data={"csrf": token})
    assert ok.status_code == 303
    message = dash.server.call(dash.server.store.message(queue_id))
    assert message is not None and message.held
    actions = dash.server.call(dash.server.store.admin_actions(limit=1))
    assert (actions[0].admin, actions[0].action, actions[0].target) == (ADMIN, "hold", queue_id)


def test_a_session_ends_when_idle(dash: Dash) -> None:
    dash.login()
    idle = dash.server.settings.dashboard.idle_timeout
    dash.clock.advance(idle - 5)
    assert dash.http.get("/dashboard/").status_code == 200  # and this use refreshes it
    dash.clock.advance(idle - 5)
    assert dash.http.get("/dashboard/").status_code == 200
    dash.clock.advance(idle + 1)
    assert dash.http.get("/dashboard/").headers["location"] == "/dashboard/login"


def test_logout_ends_the_session_even_for_a_copied_cookie(dash: Dash) -> None:
    dash.login()
    copied = dict(dash.http.cookies)
    token = dash.csrf()
    dash.clock.advance(120)  # long enough that a request would refresh the cookie
    out = dash.http.post("/dashboard/logout", data={"csrf": token})
    assert out.status_code == 303
    (cookie,) = out.headers.get_list("set-cookie")
    assert cookie.startswith('postroom_session="";') or "max-age=0" in cookie.lower()
    thief = Dash(dash.server, dash.clock, dash.url)
    thief.http.cookies.update(copied)
    assert thief.http.get("/dashboard/").status_code == 303
    thief.http.close()


def test_a_tampered_session_cookie_is_refused(dash: Dash) -> None:
    dash.login()
    token = dash.http.cookies["postroom_session"]
    payload, mac = token.split(".")
    forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + mac
    dash.http.cookies.set("postroom_session", forged, path="/dashboard")
    assert dash.http.get("/dashboard/").status_code == 303


@pytest.mark.parametrize(
    "path", ["/dashboard/", "/dashboard/login", "/dashboard/static/dashboard.css"]
)
def test_every_answer_forbids_framing_and_inline_script(dash: Dash, path: str) -> None:
    dash.login()
    answer = dash.http.get(path)
    policy = answer.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_queue_actions_hold_release_retry_and_delete(dash: Dash) -> None:
    queue_id = dash.send(MESSAGE)
    dash.login()
    token = dash.csrf()
    for verb in ("hold", "release", "retry"):
        answer = dash.http.post(f"/dashboard/messages/{queue_id}/{verb}", data={"csrf": token})
        assert answer.status_code == 303
    assert dash.server.statuses(queue_id) == [RecipientStatus.QUEUED]
    page = dash.http.get(f"/dashboard/messages/{queue_id}")
    assert page.status_code == 200 and "Accepted" in page.text
    answer = dash.http.post(f"/dashboard/messages/{queue_id}/delete", data={"csrf": token})
    assert answer.status_code == 303
    assert dash.server.statuses(queue_id) == []
    done = [a.action for a in dash.server.call(dash.server.store.admin_actions(limit=10))]
    assert done[:4] == ["delete", "retry", "release", "hold"]


def test_the_login_page_token_is_per_browser(dash: Dash) -> None:
    first = csrf_of(dash.http.get("/dashboard/login").text)
    second = Dash(dash.server, dash.clock, dash.url)
    other = csrf_of(second.http.get("/dashboard/login").text)
    second.http.close()
    assert first != other


def test_the_signing_key_is_made_once_private_and_a_bad_one_is_one_line(tmp_path: Path) -> None:
    key = dashboard_key(tmp_path)
    assert len(key) == 32
    assert dashboard_key(tmp_path) == key  # sessions outlive a restart
    assert (tmp_path / "dashboard.key").stat().st_mode & 0o777 == 0o600
    (tmp_path / "dashboard.key").write_bytes(b"short")
    with pytest.raises(PostroomError, match="shorter than 32 bytes"):
        dashboard_key(tmp_path)

"""Send a test email from the dashboard: it goes through intake and the routes, and its
result page follows it attempt by attempt, naming the cause of a failure."""

from __future__ import annotations

import socket

from tests.dashboard.conftest import MakeDash


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again when this returns


def test_a_failed_test_email_is_diagnosed_in_plain_words(make_dash: MakeDash) -> None:
    dash = make_dash(
        deliver=True,
        mailers=[{"name": "relay", "type": "smtp", "host": "127.0.0.1", "port": _closed_port(),
                  "tls": "none", "connect_timeout": 2}],
        routes=[{"name": "everything", "mailers": ["relay"]}],
    )  # fmt: skip
    dash.login()
    sent = dash.http.post(
        "/dashboard/test", data={"csrf": dash.csrf("/dashboard/test"), "to": "who@example.net"}
    )
    assert sent.status_code == 303
    result_path = sent.headers["location"]
    waiting = dash.http.get(result_path).text
    assert 'http-equiv="refresh"' in waiting  # it reloads itself until settled
    dash.server.run_delivery()
    page = dash.http.get(result_path).text
    assert "status-deferred" in page
    assert "could not reach the receiving server" in page
    assert "port 587 or 465" in page
    (action,) = dash.server.call(dash.server.store.admin_actions(limit=1))
    assert action.action == "test email" and action.target.endswith("to who@example.net")


def test_a_test_email_to_a_bad_address_gets_one_line(make_dash: MakeDash) -> None:
    dash = make_dash()
    dash.login()
    answer = dash.http.post(
        "/dashboard/test", data={"csrf": dash.csrf("/dashboard/test"), "to": "not an address"}
    )
    assert answer.status_code == 422
    assert "Not an address" in answer.text

"""The summary report: counts by mailer and domain, failure reasons, change from the
period before; queued by email through intake from a running server's store."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

from postroom.alerts.report import summary_text
from postroom.store.models import AttemptTally, AttemptTotals, FailureReason
from tests.conftest import FakeClock
from tests.support.servers import client_context, smtp_client
from tests.support.thread import MakeServer, ServerThread

WEEK = 7 * 86400.0


def test_summary_counts_by_mailer_and_domain_with_the_change_and_top_reasons() -> None:
    current = AttemptTotals(
        counts=(
            AttemptTally("mx", "example.net", "delivered", 30),
            AttemptTally("mx", "example.net", "bounced", 10),
            AttemptTally("relay", "other.example", "deferred", 5),
        ),
        reasons=(FailureReason(550, "5.1.1", 10, "5.1.1 <a@example.net> unknown user"),),
    )
    previous = AttemptTotals(
        counts=(AttemptTally("mx", "example.net", "delivered", 20),), reasons=()
    )

    text = summary_text(current, previous, since=0.0, until=WEEK, hostname="mx.example.com")

    assert text.startswith(
        "postroom on mx.example.com: delivery from 1970-01-01 00:00 to 1970-01-08 00:00 UTC\n"
    )
    assert "45 attempts (+125% on the period before)." in text
    lines = text.splitlines()
    assert [line.split() for line in lines if line.startswith("  mx ")] == [
        ["mx", "40", "30", "10", "0", "+100%"]
    ]
    assert [line.split() for line in lines if line.startswith("  relay ")] == [
        ["relay", "5", "0", "0", "5", "new"]
    ]
    assert [line.split() for line in lines if line.startswith("  example.net ")] == [
        ["example.net", "40", "30", "10", "0", "+100%"]
    ]
    assert "      10  550 5.1.1  5.1.1 <a@example.net> unknown user" in lines


def test_report_of_a_running_server_is_queued_by_email(make_server: MakeServer) -> None:
    clock = FakeClock(start=WEEK * 3000)
    srv: ServerThread = make_server(
        clock=clock, report={"enabled": True, "to": ["ops@example.test"]}
    )
    srv.add_domain("example.test")
    srv.add_user("app@example.test", "s3cret-pass")
    srv.add_user("ops@example.test", "s3cret-pass")
    with smtp_client(srv.ports["submission"]) as client:
        client.starttls(context=client_context(srv.data_dir))
        client.login("app@example.test", "s3cret-pass")
        client.sendmail("app@example.test", ["ops@example.test"], b"Subject: hi\r\n\r\nhi\r\n")
    srv.run_delivery()  # delivered to the local mailbox
    clock.advance(60)
    assert srv.server.reports is not None

    srv.call(srv.server.reports.send(WEEK * 3001))

    (report,) = [m for m in messages(srv) if "Delivery report" in str(m["Subject"])]
    body = report.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "1 attempts (new on the period before)." in text
    assert [line.split() for line in text.splitlines() if line.startswith("  local ")] == [
        ["local", "1", "1", "0", "0", "new"]
    ]


def messages(srv: ServerThread) -> list[EmailMessage]:
    found: list[EmailMessage] = []
    for stored in srv.call(srv.store.messages()):
        data = srv.call(srv.store.read_body(stored.id))
        assert data is not None
        message = email.message_from_bytes(data, policy=email.policy.SMTP)
        assert isinstance(message, EmailMessage)
        found.append(message)
    return found

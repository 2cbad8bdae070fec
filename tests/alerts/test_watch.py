"""What raises an alert, how often one goes out, and each destination's format."""

from __future__ import annotations

import email
import email.policy

from postroom.alerts.formats import alert_email, alert_json
from postroom.alerts.watch import Alert, Limiter, Watch
from postroom.config.feedback import AlertFormat, AlertKind, AlertSettings


def settings(**values: object) -> AlertSettings:
    return AlertSettings.model_validate(
        {"name": "a", "format": "slack", "url": "http://x", **values}
    )


def attempt(
    watch: Watch,
    at: float,
    disposition: str = "deferred",
    status: str = "",
    *,
    mailer: str = "relay",
    n: int = 0,
) -> list[Alert]:
    return watch.attempt(
        at=at,
        queue_id=f"Q{n}",
        recipient=f"r{n}@example.net",
        mailer=mailer,
        disposition=disposition,
        status=status or disposition,
        reply="421 4.3.2 busy",
    )


def test_a_mailer_alerts_once_after_failing_for_long_enough_and_again_after_recovering() -> None:
    watch = Watch(settings(failing_for=600, on=["mailer_failing"]))

    assert attempt(watch, 0) == [] and attempt(watch, 599) == []
    (alert,) = attempt(watch, 600)
    assert (alert.kind, alert.subject) == (AlertKind.MAILER_FAILING, "relay")
    assert [attempt(watch, 600 + i, n=i) for i in range(100)] == [[]] * 100
    assert attempt(watch, 700, mailer="other") == []  # another mailer has its own clock
    attempt(watch, 800, "delivered")
    assert attempt(watch, 900) == [] and len(attempt(watch, 1500)) == 1


def test_bounce_rate_alerts_when_it_passes_the_threshold_with_enough_messages() -> None:
    watch = Watch(settings(bounce_rate=0.5, min_messages=4, window=100, on=["bounce_rate"]))

    assert attempt(watch, 0, "bounced") == []  # one message is too few to judge
    assert attempt(watch, 1, "delivered") == [] and attempt(watch, 2, "bounced") == []
    (alert,) = attempt(watch, 3, "bounced")
    assert alert.kind is AlertKind.BOUNCE_RATE and alert.title == "Bounce rate 75%"
    assert attempt(watch, 4, "bounced") == []  # still over: said already
    assert attempt(watch, 500, "delivered") == []  # the window moved on


def test_bounced_and_expired_messages_alert_each() -> None:
    watch = Watch(settings())

    (bounced,) = attempt(watch, 0, "bounced")
    (expired,) = attempt(watch, 1, "deferred", "expired")
    assert (bounced.kind, expired.kind) == (AlertKind.BOUNCED, AlertKind.EXPIRED)
    assert "Q0" in bounced.text and "421 4.3.2 busy" in expired.text


def test_dns_alerts_when_a_domain_turns_bad_not_while_it_stays_bad() -> None:
    watch = Watch(settings())

    assert len(watch.dns(0, "example.com", ["SPF: no record"])) == 1
    assert watch.dns(1, "example.com", ["SPF: no record"]) == []
    assert watch.dns(2, "example.com", []) == []
    assert len(watch.dns(3, "example.com", ["DKIM: wrong key"])) == 1


def test_limiter_sends_one_per_subject_per_quiet_period_and_counts_the_rest() -> None:
    limiter = Limiter(settings(quiet=3600, burst=3))

    def alert(at: float, subject: str = "relay") -> Alert:
        return Alert(AlertKind.BOUNCED, subject, "t", "x", at)

    assert limiter.admit(alert(0)) is not None
    assert [limiter.admit(alert(t)) for t in range(1, 1000)] == [None] * 999
    later = limiter.admit(alert(3600))
    assert later is not None and later.held_back == 999
    assert limiter.admit(alert(3601, "a")) is not None
    assert limiter.admit(alert(3602, "b")) is not None
    assert limiter.admit(alert(3603, "c")) is None  # three sent this hour: the burst is spent


def test_formats() -> None:
    alert = Alert(
        AlertKind.MAILER_FAILING,
        "relay",
        "Mailer relay is failing",
        "line 1\nline 2",
        0.0,
        held_back=2,
    )

    slack = alert_json(alert, AlertFormat.SLACK, "mx.example.com")
    assert slack["text"] == "postroom on mx.example.com: Mailer relay is failing"
    assert slack["blocks"][1]["text"]["text"].endswith("(2 more like this were held back)")
    teams = alert_json(alert, AlertFormat.TEAMS, "mx.example.com")
    assert teams["@type"] == "MessageCard" and "line 1<br>line 2" in teams["text"]
    discord = alert_json(alert, AlertFormat.DISCORD, "mx.example.com")
    assert discord["content"].startswith(
        "**postroom on mx.example.com: Mailer relay is failing**\n"
    )
    generic = alert_json(alert, AlertFormat.WEBHOOK, "mx.example.com")
    assert (generic["kind"], generic["subject"], generic["held_back"]) == (
        "mailer_failing",
        "relay",
        2,
    )
    message = email.message_from_bytes(
        alert_email(
            alert,
            sender="postmaster@mx.example.com",
            to=("ops@example.com",),
            hostname="mx.example.com",
        ),
        policy=email.policy.SMTP,
    )
    assert message["Subject"] == "[postroom mx.example.com] Mailer relay is failing"
    assert message["Auto-Submitted"] == "auto-generated"

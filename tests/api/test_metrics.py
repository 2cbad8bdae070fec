"""``/metrics`` in the Prometheus text format, read back with prometheus-client's own
parser, and ``/healthz``."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from postroom.events.catalog import DeliveryAttempt
from postroom.events.metrics import Metrics
from postroom.store.models import QueueSummary
from tests.api.conftest import MESSAGE, Api


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_what_was_accepted_and_read_the_queue_at_scrape_time(api: Api) -> None:
    with api.client() as client:
        assert client.post("/api/v1/messages", json=MESSAGE).status_code == 202
        api.clock.advance(90)
        answer = client.get("/metrics")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        found = samples(answer.text)
        assert client.get("/healthz").json() == {"status": "ok"}
    assert found[("postroom_messages_accepted_total", (("source", "api"),))] == 1
    assert found[("postroom_queue_recipients", (("state", "queued"),))] == 1
    assert found[("postroom_queue_messages", ())] == 1
    assert found[("postroom_queue_oldest_age_seconds", ())] == 90
    assert found[("postroom_webhook_backlog", (("webhook", ""),))] >= 0
    sessions = [labels for name, labels in found if name == "postroom_smtp_sessions"]
    roles = {dict(labels)["listener"].split()[0] for labels in sessions}
    assert roles and roles <= {"mx", "submission", "submissions"}


def test_attempts_are_counted_per_mailer_with_their_latency() -> None:
    metrics = Metrics()
    for disposition, status, duration in (
        ("deferred", "deferred", 0.3),
        ("delivered", "delivered", 1.2),
        ("bounced", "bounced", 0.02),
    ):
        metrics(
            DeliveryAttempt(
                queue_id="Q",
                recipient="b@example.net",
                mailer="mx",
                disposition=disposition,
                status=status,
                reply="",
                host=None,
                ip=None,
                tls=None,
                duration=duration,
            )
        )
    empty = QueueSummary(0, 0, 0, 0, None, None)
    text = metrics.render(queue=empty, backlog={"app": 3}, sessions={}, now=0).decode()
    found = samples(text)
    for result in ("deferred", "delivered", "bounced"):
        key = ("postroom_delivery_attempts_total", (("mailer", "mx"), ("result", result)))
        assert found[key] == 1
    assert (
        found[("postroom_recipients_finished_total", (("mailer", "mx"), ("status", "bounced")))]
        == 1
    )
    assert found[("postroom_delivery_attempt_seconds_count", (("mailer", "mx"),))] == 3
    le_half = ("postroom_delivery_attempt_seconds_bucket", (("le", "0.5"), ("mailer", "mx")))
    assert found[le_half] == 2
    assert found[("postroom_webhook_backlog", (("webhook", "app"),))] == 3
    assert found[("postroom_queue_oldest_age_seconds", ())] == 0

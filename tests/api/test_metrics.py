"""``/metrics`` in the Prometheus text format, read back with prometheus-client's own
parser, and ``/healthz``."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from postroom.events.catalog import DeliveryAttempt
from postroom.events.counts import ProcessCounts
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


def attempt(disposition: str, status: str, duration: float, mailer: str = "mx") -> DeliveryAttempt:
    return DeliveryAttempt(
        queue_id="Q",
        recipient="b@example.net",
        mailer=mailer,
        disposition=disposition,
        status=status,
        reply="",
        host=None,
        ip=None,
        tls=None,
        duration=duration,
    )


def test_attempts_are_counted_per_mailer_with_their_latency() -> None:
    metrics = Metrics()
    for disposition, status, duration in (
        ("deferred", "deferred", 0.3),
        ("delivered", "delivered", 1.2),
        ("bounced", "bounced", 0.02),
    ):
        metrics(attempt(disposition, status, duration))
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


def test_a_workers_attempts_and_latency_are_added_to_the_primarys() -> None:
    metrics = Metrics()
    metrics(attempt("delivered", "delivered", 0.02, mailer="local"))
    worker = ProcessCounts()
    worker(attempt("delivered", "delivered", 0.5, mailer="local"))  # on a bucket's bound
    worker(attempt("deferred", "deferred", 150.0, mailer="local"))  # above every bound
    report = json.loads(json.dumps(worker.snapshot({})))  # as it crosses the pipe
    empty = QueueSummary(0, 0, 0, 0, None, None)
    text = metrics.render(queue=empty, backlog={}, sessions={}, now=0, workers=[report])
    found = samples(text.decode())
    delivered = (("mailer", "local"), ("result", "delivered"))
    assert found[("postroom_delivery_attempts_total", delivered)] == 2
    assert (
        found[
            ("postroom_recipients_finished_total", (("mailer", "local"), ("status", "delivered")))
        ]
        == 2
    )
    bucket = "postroom_delivery_attempt_seconds_bucket"
    assert found[(bucket, (("le", "0.01"), ("mailer", "local")))] == 0
    assert found[(bucket, (("le", "0.05"), ("mailer", "local")))] == 1
    assert found[(bucket, (("le", "0.5"), ("mailer", "local")))] == 2
    assert found[(bucket, (("le", "120.0"), ("mailer", "local")))] == 2
    assert found[(bucket, (("le", "+Inf"), ("mailer", "local")))] == 3
    assert found[("postroom_delivery_attempt_seconds_count", (("mailer", "local"),))] == 3
    assert found[("postroom_delivery_attempt_seconds_sum", (("mailer", "local"),))] == 150.52

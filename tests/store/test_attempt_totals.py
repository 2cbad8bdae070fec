"""The summary report's counts from the attempt rows: by mailer, recipient domain and
disposition within a period, and the most frequent failure replies."""

from __future__ import annotations

import pytest

from postroom.store import RecipientStatus, Store
from postroom.store.models import AttemptTally, FailureReason
from tests.store.factories import NOW, attempt, deferred, delivered, final, new_message, to

pytestmark = pytest.mark.store_parts("log", "queue")


async def test_attempts_are_counted_by_mailer_domain_and_disposition_within_the_period(
    store: Store,
) -> None:
    message = new_message(
        recipients=to("a@Example.NET", "b@example.net", "c@other.example", "d@other.example")
    )
    await store.enqueue(message)
    await store.record_outcomes(
        message.id,
        [delivered("a@Example.NET"), deferred("b@example.net", NOW + 600),
         final("c@other.example", RecipientStatus.BOUNCED),
         final("d@other.example", RecipientStatus.BOUNCED)],
        [
            attempt(message.id, "a@Example.NET", NOW, mailer="mx", text="2.0.0 ok"),
            attempt(message.id, "b@example.net", NOW + 1, "deferred", mailer="mx", code=451,
                    text="4.3.0 try later"),
            attempt(message.id, "c@other.example", NOW + 2, "bounced", mailer="relay", code=550,
                    text="5.1.1 <c@other.example> unknown"),
            attempt(message.id, "d@other.example", NOW + 3, "bounced", mailer="relay", code=550,
                    text="5.1.1 <d@other.example> unknown"),
            attempt(message.id, "a@Example.NET", NOW + 3600, mailer="mx", text="2.0.0 ok"),
        ],
    )  # fmt: skip

    totals = await store.attempt_totals(NOW, NOW + 3600, reasons=5)

    assert totals.counts == (
        AttemptTally("mx", "example.net", "deferred", 1),
        AttemptTally("mx", "example.net", "delivered", 1),  # the one at NOW + 3600 is later
        AttemptTally("relay", "other.example", "bounced", 2),
    )
    assert totals.reasons == (
        FailureReason(550, "5.1.1", 2, "5.1.1 <c@other.example> unknown"),
        FailureReason(451, "4.3.0", 1, "4.3.0 try later"),
    )
    assert (await store.attempt_totals(NOW, NOW + 3600, reasons=1)).reasons[0].count == 2
    empty = await store.attempt_totals(NOW + 7200, NOW + 9000, reasons=5)
    assert (empty.counts, empty.reasons) == ((), ())

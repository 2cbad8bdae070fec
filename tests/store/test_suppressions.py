"""The suppression list: global and per sender domain entries, found without case."""

from __future__ import annotations

import pytest

from postroom.store import Store
from postroom.store.models import GLOBAL_SCOPE, Suppression, SuppressionReason
from tests.store.factories import NOW

pytestmark = pytest.mark.store_parts("suppression")


def _entry(
    address: str,
    scope: str = GLOBAL_SCOPE,
    reason: SuppressionReason = SuppressionReason.HARD_BOUNCE,
    source: str = "delivery 0123456789ABCDEF",
    at: float = NOW,
) -> Suppression:
    return Suppression(address, scope, reason, source, at, "550 5.1.1 no such user")


async def test_an_added_address_is_listed_once_and_the_newest_cause_shown(store: Store) -> None:
    assert await store.add_suppression(_entry("Bob@Example.NET")) is True
    again = _entry("bob@example.net", reason=SuppressionReason.COMPLAINT, source="provider sg")
    assert await store.add_suppression(again) is False
    assert await store.suppressions() == [
        Suppression(
            "bob@example.net",
            "",
            SuppressionReason.COMPLAINT,
            "provider sg",
            NOW,
            "550 5.1.1 no such user",
        )
    ]


async def test_a_global_entry_stops_every_sender_a_scoped_one_only_its_domain(
    store: Store,
) -> None:
    await store.add_suppression(_entry("bob@example.net"))
    await store.add_suppression(
        _entry("carol@example.net", "shop.example", SuppressionReason.UNSUBSCRIBE)
    )
    asked = ["BOB@example.net", "carol@example.net", "dave@example.net"]
    from_shop = await store.suppressed(asked, "Shop.Example")
    assert {a: (s.address, s.scope) for a, s in from_shop.items()} == {
        "BOB@example.net": ("bob@example.net", ""),
        "carol@example.net": ("carol@example.net", "shop.example"),
    }
    from_news = await store.suppressed(asked, "news.example")
    assert list(from_news) == ["BOB@example.net"]
    assert list(await store.suppressed(asked, None)) == ["BOB@example.net"]
    assert await store.suppressed([], "shop.example") == {}


async def test_a_global_entry_is_named_before_a_domain_one(store: Store) -> None:
    await store.add_suppression(_entry("bob@example.net", "shop.example"))
    await store.add_suppression(_entry("bob@example.net"))
    found = await store.suppressed(["bob@example.net"], "shop.example")
    assert found["bob@example.net"].scope == GLOBAL_SCOPE


async def test_removal_takes_one_scope_only(store: Store) -> None:
    await store.add_suppression(_entry("bob@example.net"))
    await store.add_suppression(_entry("bob@example.net", "shop.example"))
    assert await store.remove_suppression("BOB@example.net", "") is True
    assert await store.remove_suppression("bob@example.net", "") is False
    assert [(s.address, s.scope) for s in await store.suppressions()] == [
        ("bob@example.net", "shop.example")
    ]


async def test_the_list_pages_by_address_and_filters_by_scope_and_address(
    store: Store,
) -> None:
    for address in ("dave@example.net", "bob@example.net", "carol@example.net"):
        await store.add_suppression(_entry(address))
    await store.add_suppression(_entry("bob@example.net", "shop.example"))
    first = await store.suppressions(limit=2)
    assert [(s.address, s.scope) for s in first] == [
        ("bob@example.net", ""),
        ("bob@example.net", "shop.example"),
    ]
    rest = await store.suppressions(after=(first[-1].address, first[-1].scope))
    assert [s.address for s in rest] == ["carol@example.net", "dave@example.net"]
    scoped = await store.suppressions(scope="shop.example")
    assert [s.address for s in scoped] == ["bob@example.net"]
    one = await store.suppressions(address="Bob@example.net")
    assert [s.scope for s in one] == ["", "shop.example"]

"""Links: VERP return paths by setting and by route, bounce addresses read back, URLs
that name what they were made for."""

from __future__ import annotations

from postroom.config.feedback import BounceSettings
from postroom.feedback.links import Link, LinkKind, Links
from postroom.mail.address import parse_address
from postroom.mail.tokens import TokenSigner

QUEUE_ID = "01J0000000000ABC"


def links(**bounces: object) -> Links:
    settings = BounceSettings.model_validate(bounces)
    return Links(TokenSigner(bytes(range(32))), "https://t.example.com", settings)


def test_return_path_is_verp_when_the_settings_or_the_route_say_so() -> None:
    off, on = links(), links(verp=True, domain="bounces.example.com")

    assert off.return_path("app@example.com", QUEUE_ID) == "app@example.com"
    assert off.return_path("app@example.com", QUEUE_ID, True).endswith("@example.com")
    verp = on.return_path("app@example.com", QUEUE_ID)
    assert verp.startswith("bounces+") and verp.endswith("@bounces.example.com")
    assert on.return_path("app@example.com", QUEUE_ID, False) == "app@example.com"
    assert on.return_path("", QUEUE_ID) == ""  # a bounce never gets a return path


def test_bounce_addresses_are_read_back_and_others_are_not() -> None:
    ours = links(verp=True, domain="bounces.example.com")
    verp = ours.return_path("app@example.com", QUEUE_ID)

    assert ours.returned(parse_address(verp)) == QUEUE_ID
    assert ours.returned(parse_address(verp.upper())) == QUEUE_ID  # folded on the way back
    assert ours.returned(parse_address("bounces@bounces.example.com")) == ""
    assert ours.returned(parse_address("bounces@example.com")) is None  # not the domain
    assert ours.returned(parse_address("app@example.com")) is None
    other_key = Links(TokenSigner(bytes(32)), "https://t.example.com", BounceSettings())
    assert other_key.returned(parse_address(verp)) is None


def test_urls_read_back_as_what_they_were_made_for() -> None:
    made = links()
    click = made.click(QUEUE_ID, "a@example.net", "https://shop.example/?a=1&b=2")
    token = click.rpartition("/")[2]

    assert click.startswith("https://t.example.com/t/c/")
    assert made.read(LinkKind.CLICK, token) == Link(
        LinkKind.CLICK, QUEUE_ID, "a@example.net", url="https://shop.example/?a=1&b=2"
    )
    assert made.read(LinkKind.OPEN, token) is None  # a click token is no pixel
    pixel = made.pixel(QUEUE_ID, "").rpartition("/")[2]
    assert made.read(LinkKind.OPEN, pixel) == Link(LinkKind.OPEN, QUEUE_ID, "")

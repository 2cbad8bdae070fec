"""Tracking, the message side: HTML parts rewritten, other parts left, fetchers judged."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest

from postroom.mail.tracking import Tracking, is_machine, parse_track, track_html, track_message

GOOGLE_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
# Apple Mail Privacy Protection's bare WebKit string; Safari adds Version and Safari.
APPLE_WEBKIT = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
)


def link(url: str) -> str:
    return "https://t.example.com/t/c/" + url.replace("://", "~")


def test_links_are_rewritten_and_the_pixel_goes_before_the_body_end() -> None:
    text = (
        '<html><body><a href="https://example.org/a?x=1&amp;y=2">A</a>'
        "<a href='http://example.org/b'>B</a> <a href=https://example.org/c>C</a>"
        '<a href="mailto:someone@example.org">M</a><a href="#top">T</a>'
        '<a data-postroom-track="no" href="https://example.org/keep">K</a></body></html>'
    )

    tracked = track_html(text, pixel="https://t.example.com/t/o/X?a=1&b=2", link=link)

    # The URL as the reader's browser sees it (entities undone) is what gets tracked.
    assert '<a href="https://t.example.com/t/c/https~example.org/a?x=1&amp;y=2">A</a>' in tracked
    assert '<a href="https://t.example.com/t/c/http~example.org/b">B</a>' in tracked
    assert '<a href="https://t.example.com/t/c/https~example.org/c">C</a>' in tracked
    assert 'href="mailto:someone@example.org"' in tracked and 'href="#top"' in tracked
    assert 'href="https://example.org/keep"' in tracked
    assert tracked.endswith(
        '<img src="https://t.example.com/t/o/X?a=1&amp;b=2" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px"></body></html>'
    )


def test_message_html_part_is_tracked_and_the_text_part_is_not() -> None:
    message = EmailMessage()
    message["From"] = "app@example.com"
    message["Subject"] = "Hi"
    message.set_content("see https://example.org/a")
    message.add_alternative('<p>see <a href="https://example.org/a">here</a></p>', subtype="html")

    tracked = track_message(message.as_bytes(), pixel="https://t.example.com/t/o/P", link=link)

    assert tracked is not None
    parsed = email.message_from_bytes(tracked, policy=email.policy.SMTP)
    assert isinstance(parsed, EmailMessage)
    plain = parsed.get_body(("plain",))
    rich = parsed.get_body(("html",))
    assert plain is not None and rich is not None
    assert plain.get_content().strip() == "see https://example.org/a"
    html = rich.get_content()
    assert "https://t.example.com/t/c/https~example.org/a" in html
    assert '<img src="https://t.example.com/t/o/P"' in html


def test_message_without_html_is_left_alone() -> None:
    assert track_message(b"Subject: x\r\n\r\nplain\r\n", pixel="p", link=link) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("yes", Tracking(True, True)),
        ("opens", Tracking(True, False)),
        ("clicks", Tracking(False, True)),
        ("Opens, Clicks", Tracking(True, True)),
        ("no", Tracking()),
        ("maybe", None),
    ],
)
def test_track_field_values(value: str, expected: Tracking | None) -> None:
    assert parse_track(value) == expected


@pytest.mark.parametrize(
    ("agent", "since", "verdict"),
    [
        (
            GOOGLE_PROXY,
            3600.0,
            "user-agent",
        ),
        (
            APPLE_WEBKIT,
            3600.0,
            "user-agent",
        ),
        ("Mozilla/5.0 (compatible; Barracuda Sentinel)", 3600.0, "user-agent"),
        ("", 3600.0, "user-agent"),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0", 2.0, "timing"),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0", 3600.0, None),
        (
            APPLE_WEBKIT + " Version/17.1 Safari/605.1.15",
            None,
            None,
        ),
        ("curl/8.5.0", None, None),
    ],
)
def test_machine_fetches_by_user_agent_and_timing(
    agent: str, since: float | None, verdict: str | None
) -> None:
    assert is_machine(agent, since_delivery=since) == verdict

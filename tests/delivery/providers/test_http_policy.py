"""The shared HTTP policy: table lookup, retry hints and secrets (no sockets)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from postroom.config.providers import (
    MailgunMailerSettings,
    SendgridMailerSettings,
    SesMailerSettings,
    SparkpostMailerSettings,
)
from postroom.delivery.mailers.api.http import (
    DEFAULT_TABLE,
    HintKind,
    Verdict,
    classify,
    resolve_secret,
    retry_hint,
)
from postroom.delivery.mailers.api.postmark import TABLE as POSTMARK
from postroom.errors import ConfigError

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("status", "code", "verdict"),
    [
        (200, None, Verdict.ACCEPTED),
        (202, None, Verdict.ACCEPTED),
        (401, None, Verdict.MISCONFIG),
        (403, None, Verdict.MISCONFIG),
        (404, None, Verdict.MISCONFIG),
        (408, None, Verdict.TEMPORARY),
        (413, None, Verdict.REJECTED),
        (422, None, Verdict.REJECTED),
        (429, None, Verdict.THROTTLED),
        (500, None, Verdict.TEMPORARY),
        (503, "x", Verdict.TEMPORARY),
        (302, None, Verdict.TEMPORARY),  # a redirect we do not follow
    ],
)
def test_the_default_table(status: int, code: str | None, verdict: Verdict) -> None:
    assert classify(DEFAULT_TABLE, status, code).verdict is verdict


def test_the_most_specific_key_wins() -> None:
    assert classify(POSTMARK, 422, "406").enhanced == "5.7.1"
    assert classify(POSTMARK, 422, "10").verdict is Verdict.MISCONFIG
    assert classify(POSTMARK, 422, "999").enhanced == "5.6.0"  # "422"
    assert classify(POSTMARK, 418, None).enhanced == "5.0.0"  # "4xx"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "30"}, NOW + 30),
        ({"retry-after": "Fri, 15 Jan 2027 08:01:00 GMT"}, NOW + 60),
        ({"retry-after": "Fri, 15 Jan 2027 07:00:00 GMT"}, NOW),  # in the past: now
        ({"x-ratelimit-reset": str(int(NOW) + 90)}, NOW + 90),
        ({"retry-after": "soon", "x-ratelimit-reset": str(int(NOW) + 5)}, NOW + 5),
        ({}, None),
    ],
)
def test_retry_hints(headers: dict[str, str], expected: float | None) -> None:
    kinds = (("retry-after", HintKind.SECONDS), ("x-ratelimit-reset", HintKind.EPOCH))
    assert retry_hint(headers, kinds, NOW) == expected


def test_the_secret_comes_from_the_file_or_the_environment() -> None:
    given = SendgridMailerSettings(name="sg", api_key="SG.in-file")
    from_env = SendgridMailerSettings(name="sg", api_key_env="SG_KEY")
    assert resolve_secret(given, {}) == "SG.in-file"
    assert resolve_secret(from_env, {"SG_KEY": "SG.from-env"}) == "SG.from-env"
    with pytest.raises(
        ConfigError, match=r"mailers\.sg\.api_key_env: the environment variable SG_KEY is not set"
    ):
        resolve_secret(from_env, {})
    with pytest.raises(ConfigError, match=r"mailers\.sg\.api_key: set api_key or api_key_env"):
        resolve_secret(SendgridMailerSettings(name="sg"), {})
    with pytest.raises(ValidationError, match="not both"):
        SendgridMailerSettings(name="sg", api_key="a", api_key_env="B")


def test_settings_never_show_the_secret() -> None:
    settings = SendgridMailerSettings(name="sg", api_key="SG.very-secret")
    assert "SG.very-secret" not in repr(settings)
    assert "SG.very-secret" not in str(settings)
    assert "SG.very-secret" not in settings.model_dump_json()


def test_regional_endpoints_by_default() -> None:
    ses = SesMailerSettings(name="ses", region="eu-central-1", api_key="x", access_key_id="A")
    assert ses.base_url == "https://email.eu-central-1.amazonaws.com"
    given = SesMailerSettings(name="ses", region="eu-central-1", base_url="http://127.0.0.1:1")
    assert given.base_url == "http://127.0.0.1:1"


def test_mailgun_and_sparkpost_regions_pick_their_endpoints() -> None:
    assert MailgunMailerSettings(name="m", domain="d").base_url == "https://api.mailgun.net"
    eu = MailgunMailerSettings.model_validate({"name": "m", "domain": "d", "region": "eu"})
    assert eu.base_url == "https://api.eu.mailgun.net"
    spark = SparkpostMailerSettings.model_validate({"name": "s", "region": "eu"})
    assert spark.base_url == "https://api.eu.sparkpost.com"
    with pytest.raises(ValidationError):
        MailgunMailerSettings.model_validate({"name": "m", "domain": "d", "region": "ap"})

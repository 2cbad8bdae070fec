"""Each provider's fake and a mailer pointed at it, for tests that run over all of them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from postroom.config.providers import (
    BrevoMailerSettings,
    MailgunMailerSettings,
    PostmarkMailerSettings,
    ResendMailerSettings,
    SendgridMailerSettings,
    SesMailerSettings,
    SparkpostMailerSettings,
)
from postroom.delivery.mailers.api.brevo import BrevoMailer
from postroom.delivery.mailers.api.http import HttpMailer
from postroom.delivery.mailers.api.mailgun import MailgunMailer
from postroom.delivery.mailers.api.postmark import PostmarkMailer
from postroom.delivery.mailers.api.resend import ResendMailer
from postroom.delivery.mailers.api.sendgrid import SendgridMailer
from postroom.delivery.mailers.api.ses import SesMailer
from postroom.delivery.mailers.api.sparkpost import SparkpostMailer
from tests.conftest import FakeClock
from tests.delivery.providers.fakes import (
    BrevoFake,
    Fake,
    MailgunFake,
    PostmarkFake,
    ResendFake,
    SendgridFake,
    SesFake,
    SparkpostFake,
)
from tests.support.http_fake import FakeHttp, serve

__all__ = ["KINDS", "Kind", "running"]


@dataclass(frozen=True)
class Kind:
    name: str
    fake: Callable[[], Fake]
    key: str  # what the fake accepts
    build: Callable[[str, str, FakeClock, dict[str, Any]], HttpMailer[Any]]


def _sendgrid(url: str, key: str, clock: FakeClock, extra: dict[str, Any]) -> HttpMailer[Any]:
    settings = SendgridMailerSettings(
        name="sendgrid", base_url=url, api_key_env="SENDGRID_API_KEY", **{"timeout": 1.0, **extra}
    )
    return SendgridMailer(settings, clock=clock, environ={"SENDGRID_API_KEY": key})


def _mailgun(url: str, key: str, clock: FakeClock, extra: dict[str, Any]) -> HttpMailer[Any]:
    settings = MailgunMailerSettings(
        name="mailgun",
        base_url=url,
        domain="mg.example.org",
        api_key=key,
        **{"timeout": 1.0, **extra},
    )
    return MailgunMailer(settings, clock=clock, environ={})


def _postmark(url: str, key: str, clock: FakeClock, extra: dict[str, Any]) -> HttpMailer[Any]:
    settings = PostmarkMailerSettings(
        name="postmark", base_url=url, api_key_env="PM_TOKEN", **{"timeout": 1.0, **extra}
    )
    return PostmarkMailer(settings, clock=clock, environ={"PM_TOKEN": key})


def _sparkpost(url: str, key: str, clock: FakeClock, extra: dict[str, Any]) -> HttpMailer[Any]:
    settings = SparkpostMailerSettings(
        name="sparkpost", base_url=url, api_key=key, **{"timeout": 1.0, **extra}
    )
    return SparkpostMailer(settings, clock=clock, environ={})


def _ses(url: str, key: str, clock: FakeClock, extra: dict[str, Any]) -> HttpMailer[Any]:
    settings = SesMailerSettings(
        name="ses",
        base_url=url,
        region="eu-west-1",
        access_key_id="AKIDEXAMPLE",
        api_key_env="AWS_SECRET_ACCESS_KEY",
        **{"timeout": 1.0, **extra},
    )
    return SesMailer(settings, clock=clock, environ={"AWS_SECRET_ACCESS_KEY": key})


def _brevo(url: str, key: str, clock: FakeClock, extra: dict[str, Any]) -> HttpMailer[Any]:
    settings = BrevoMailerSettings(
        name="brevo", base_url=url, api_key=key, **{"timeout": 1.0, **extra}
    )
    return BrevoMailer(settings, clock=clock, environ={})


def _resend(url: str, key: str, clock: FakeClock, extra: dict[str, Any]) -> HttpMailer[Any]:
    settings = ResendMailerSettings(
        name="resend", base_url=url, api_key_env="RESEND_API_KEY", **{"timeout": 1.0, **extra}
    )
    return ResendMailer(settings, clock=clock, environ={"RESEND_API_KEY": key})


KINDS = {
    kind.name: kind
    for kind in (
        Kind("sendgrid", SendgridFake, "SG.key", _sendgrid),
        Kind("mailgun", MailgunFake, "mg-key", _mailgun),
        Kind("postmark", PostmarkFake, "pm-token", _postmark),
        Kind("sparkpost", SparkpostFake, "sp-key", _sparkpost),
        Kind("ses", SesFake, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", _ses),
        Kind("brevo", BrevoFake, "xkeysib-key", _brevo),
        Kind("resend", ResendFake, "re_key", _resend),
    )
}


@contextmanager
def running(
    kind: Kind, clock: FakeClock, key: str | None = None, **extra: Any
) -> Iterator[tuple[Any, FakeHttp, HttpMailer[Any]]]:
    """The provider's fake on loopback and a mailer pointed at it (closed afterwards)."""
    fake = kind.fake()
    if isinstance(fake, SesFake):  # signatures are checked against the mailer's clock
        fake.now = clock.time
    with serve(fake) as server:
        yield fake, server, kind.build(server.url, kind.key if key is None else key, clock, extra)

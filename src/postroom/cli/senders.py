"""The options that say what a user or an API key may send as, shared by their commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from postroom.directory import normalize_domain

__all__ = ["check_senders", "sender_options"]

F = TypeVar("F", bound=Callable[..., object])


def sender_options(besides: str) -> Callable[[F], F]:
    """``--sender-domain`` (repeatable) and ``--any-sender``; ``besides``: what the
    principal may use without them ("its own", "the local domains")."""

    def decorate(command: F) -> F:
        command = click.option("--any-sender", is_flag=True, help="May send as any domain.")(
            command
        )
        return click.option(
            "--sender-domain",
            "sender_domains",
            multiple=True,
            metavar="DOMAIN",
            help=f"Another domain it may send as, besides {besides} (repeatable).",
        )(command)

    return decorate


def check_senders(sender_domains: tuple[str, ...], any_sender: bool) -> None:
    """A usage error for both at once; a one-line error for a bad domain."""
    if any_sender and sender_domains:
        raise click.UsageError("--any-sender allows every domain: give no --sender-domain")
    for domain in sender_domains:
        normalize_domain(domain)

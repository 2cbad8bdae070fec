"""``postroom mailer authorize NAME``: let a mailer send as a user (OAuth 2.0).

Prints the provider's consent address; the user opens it, allows access, and pastes
back the code or the whole address the browser ended on (``--code`` gives it without a
prompt, to the authorization the last run printed). The code is exchanged, with that
authorization's PKCE verifier, for a refresh token kept in
``<data_dir>/oauth/<NAME>.json`` (mode 0600). ``oauth_status`` is the line
``postroom mailer status`` shows for such a mailer.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import click
import httpx

from postroom.cli import AppContext, config_option, fail, pass_app
from postroom.config.settings import Settings
from postroom.delivery.mailers.oauth.flow import (
    PROVIDERS,
    OAuthConfig,
    OAuthError,
    OAuthSettings,
    authorization_url,
    code_from,
    describe,
    exchange_code,
    oauth_config,
)
from postroom.delivery.mailers.oauth.tokens import (
    PendingAuthorization,
    PendingFile,
    TokenFile,
    TokenState,
    token_path,
)

__all__ = ["authorize", "oauth_status"]


def _oauth_mailer(settings: Settings, name: str) -> OAuthSettings:
    for mailer in settings.mailers:
        if mailer.name == name:
            if mailer.type not in PROVIDERS:
                fail(f"mailer {name} (type {mailer.type}) does not use OAuth")
            return mailer  # type: ignore[return-value]
    fail(f"no mailer named {name!r}")


def oauth_status(settings: Settings, name: str, now: float | None = None) -> str | None:
    """The token state of an OAuth mailer in one line; None for other mailers."""
    mailer = next((m for m in settings.mailers if m.name == name), None)
    if mailer is None or mailer.type not in PROVIDERS:
        return None
    state = TokenFile(token_path(settings.data_dir, name)).load()
    return describe(state, name, time.time() if now is None else now)


@click.command("authorize")
@click.argument("name")
@click.option(
    "--code",
    metavar="CODE",
    help="The authorization code, or the address the browser was sent to (no prompt).",
)
@config_option
@pass_app
def authorize(app: AppContext, name: str, code: str | None) -> None:
    """Authorize an OAuth mailer (gmail, outlook, zoho) to send as its user."""
    settings = app.settings
    config = oauth_config(_oauth_mailer(settings, name), os.environ)
    pending_file = PendingFile(settings.data_dir, name)
    if code is None:
        pending = PendingAuthorization.new()
        pending_file.save(pending)  # a later --code finishes it
        click.echo("Open this address, allow access, then paste the code shown, or the whole")
        click.echo("address your browser was sent to (it may say it cannot connect):\n")
        click.echo(f"  {authorization_url(config, pending)}\n")
        click.echo("Code: ", nl=False)
        pasted = sys.stdin.readline()
    else:
        found_pending = pending_file.load()
        if found_pending is None:
            fail(f"no authorization of mailer {name} in progress: run it without --code first")
        pending, pasted = found_pending, code
    try:
        found = code_from(pasted, pending.state)
    except ValueError as exc:
        fail(str(exc))
    path = token_path(settings.data_dir, name)
    try:
        tokens = asyncio.run(_exchange(config, found, pending))
    except OAuthError as exc:
        fail(f"mailer {name}: {exc}")
    TokenFile(path).save(tokens)
    pending_file.remove()  # a code is good once
    click.echo(f"mailer {name} authorized; its refresh token is in {path}")


async def _exchange(config: OAuthConfig, code: str, pending: PendingAuthorization) -> TokenState:
    async with httpx.AsyncClient() as http:
        return await exchange_code(config, code, pending, http, time.time())

"""``postroom status``: ask the running server whether every part of it works (/readyz)."""

from __future__ import annotations

import click

from postroom.cli import AppContext, config_option, fail, pass_app

__all__ = ["status"]

_TIMEOUT = 10.0


@click.command()
@config_option
@pass_app
def status(app: AppContext) -> None:
    """Ask the running server (over its API) whether every part works: exit 0 when
    ready, 1 with one line per failing part."""
    import httpx

    api = app.settings.api
    if not api.enabled or api.port == 0:
        fail("status asks the server's API: set [api] enabled = true and a fixed port")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(api.address, api.address)
    url = f"http://{f'[{host}]' if ':' in host else host}:{api.port}/readyz"
    try:
        answer = httpx.get(url, timeout=_TIMEOUT)
        body = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        fail(f"no answer from a server at {url}: {exc}")
    paused = body.get("delivery") == "paused"
    if answer.status_code == 200:
        click.echo("ready; delivery is paused (delivery.paused)" if paused else "ready")
        return
    if paused:
        click.echo("delivery is paused (delivery.paused)")
    for part in body.get("failing", []):
        click.echo(f"{part['part']}: failing ({part['failures']} times): {part['reason']}")
    raise click.exceptions.Exit(1)

"""The ``postroom`` command: a click group whose subcommands live one module per group.

Subcommand modules are imported when named, so ``postroom --help`` stays fast, and
settings are loaded on first use, so a command that needs none never reads the file.
The file is found as ``config.discover`` says (``--config``, ``$POSTROOM_CONFIG``,
``./postroom.toml``, ``/etc/postroom/postroom.toml``, else the defaults). Only the
commands that add to the directory (``domain add``, ``user add``, ``apikey create``) and
``serve`` create a store where there is none; every other command says there is none.
Every expected failure (any ``PostroomError``, and OS errors such as a read-only data
directory) ends as one line ``postroom: <message>`` on standard error, exit code 2 for
configuration errors and 1 for the rest; never a traceback.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from postroom.errors import ConfigError, NoStore, PostroomError

if TYPE_CHECKING:
    from postroom.config.discover import ConfigSource
    from postroom.config.settings import Settings
    from postroom.store import Store

__all__ = ["AppContext", "config_option", "fail", "main", "pass_app"]

T = TypeVar("T")

# name -> "module:attribute" of each subcommand, imported on first use.
_COMMANDS = {
    "apikey": "postroom.cli.apikey:apikey",
    "config": "postroom.cli.config:config",
    "db": "postroom.cli.db:db",
    "dkim": "postroom.cli.dkim:dkim",
    "domain": "postroom.cli.domain:domain",
    "log": "postroom.cli.log:log",
    "mailer": "postroom.cli.mailer:mailer",
    "queue": "postroom.cli.queue:queue",
    "route": "postroom.cli.route:route",
    "send": "postroom.cli.send:send",
    "serve": "postroom.cli.serve:serve",
    "status": "postroom.cli.status:status",
    "suppression": "postroom.cli.suppression:suppression",
    "user": "postroom.cli.user:user",
    "webhook": "postroom.cli.webhook:webhook",
}


class AppContext:
    """What every command shares: the configuration file, the settings, the store."""

    def __init__(self, config_path: Path | None) -> None:
        self.config_path = config_path  # as given with --config
        self._source: ConfigSource | None = None
        self._settings: Settings | None = None

    @property
    def source(self) -> ConfigSource:
        """The configuration file this command uses (or the built-in defaults)."""
        if self._source is None:
            from postroom.config.discover import find_config

            self._source = find_config(self.config_path, os.environ, Path.cwd())
        return self._source

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from postroom.config import load

            self._settings = load(self.source.path)
        return self._settings

    def run(self, use: Callable[[Store], Awaitable[T]], *, create: bool = False) -> T:
        """Open the store, ``await use(store)``, close the store. Where there is no store,
        ``NoStore`` unless ``create`` (then say that a new one was made). A used data
        directory whose database is lost is refused, never silently given a new one."""
        from postroom.store.instance import store_exists

        settings = self.settings
        new = create and not store_exists(settings.storage_url)
        result = asyncio.run(_with_store(settings, use, create=create))
        if new:
            click.echo(f"postroom: made a new store at {_where(settings)}", err=True)
        return result


def _where(settings: Settings) -> str:
    from postroom.store.open import sqlite_path

    return str(sqlite_path(settings.storage_url) or settings.storage_url)


async def _with_store(
    settings: Settings, use: Callable[[Store], Awaitable[T]], *, create: bool
) -> T:
    from postroom.store.instance import open_instance_store

    store = await open_instance_store(settings.storage_url, settings.data_dir, create=create)
    try:
        return await use(store)
    finally:
        await store.aclose()


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``postroom: message`` on standard error and exit with ``code``."""
    click.echo(f"postroom: {message}", err=True)
    raise click.exceptions.Exit(code)


def _set_config(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    app = ctx.find_object(AppContext)
    if value is not None and app is not None:
        app.config_path = value


config_option = click.option(
    "--config",
    type=click.Path(path_type=Path),
    expose_value=False,
    callback=_set_config,
    help="The TOML configuration file (default: $POSTROOM_CONFIG, else ./postroom.toml,"
    " else /etc/postroom/postroom.toml, else built-in defaults).",
)
pass_app = click.make_pass_decorator(AppContext)


class _Root(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attribute = target.split(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NoStore as exc:
            app = ctx.find_object(AppContext)
            source = app.source.describe() if app is not None else "?"
            fail(
                f"{exc} (configuration: {source}); `postroom serve` makes one on its first"
                " start, or choose the configuration with --config"
            )
        except ConfigError as exc:
            fail(str(exc), 2)
        except PostroomError as exc:
            fail(str(exc))
        except BrokenPipeError:
            # The reader left early (`postroom config show | head`): nothing to report,
            # and nothing more may be flushed to the closed pipe at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise click.exceptions.Exit(1) from None
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            fail(f"{exc.strerror or exc}{where}")


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    type=click.Path(path_type=Path),
    help="The TOML configuration file (default: $POSTROOM_CONFIG, else ./postroom.toml,"
    " else /etc/postroom/postroom.toml, else built-in defaults).",
)
@click.version_option(package_name="postroom", prog_name="postroom")
@click.pass_context
def main(ctx: click.Context, config: Path | None) -> None:
    """postroom: a self-hosted mail server for applications."""
    ctx.obj = AppContext(config)

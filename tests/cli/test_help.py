"""Every command's help reads as plain text (no reStructuredText ``literal`` marks from
the docstrings), ``queue retry --help`` says ``--all`` takes no id, and ``--version``
is the installed distribution's."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import version

import click
import pytest
from click.testing import CliRunner

import postroom
from postroom.cli import main


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None, name
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from command_paths(command, (*prefix, name))


ALL_COMMANDS = [(), *command_paths(main)]


def test_the_walk_finds_nested_commands() -> None:
    assert ("queue", "retry") in ALL_COMMANDS
    assert ("mailer", "authorize") in ALL_COMMANDS
    assert len(ALL_COMMANDS) > 40


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda path: " ".join(path) or "postroom")
def test_help_has_no_restructuredtext_backticks(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"], prog_name="postroom", terminal_width=100)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: postroom")
    assert "``" not in result.stdout


def test_queue_retry_help_shows_that_all_needs_no_id() -> None:
    result = CliRunner().invoke(
        main, ["queue", "retry", "--help"], prog_name="postroom", terminal_width=100
    )
    assert result.stdout.startswith("Usage: postroom queue retry [OPTIONS] (ID | --all)\n")
    assert "--all          Every message in the queue (give no ID)." in result.stdout


def test_version_is_the_installed_distribution() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"postroom, version {version('postroom')}\n"
    assert postroom.__version__ == version("postroom")  # one version, whichever is asked

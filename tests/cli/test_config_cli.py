"""`postroom config show/check`, the configuration each command finds, and commands that
only read never making a store. In-process through click's runner (the real command
tree, its option parsing and exit codes), one real `postroom serve` for the comparison."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from postroom.cli import main
from postroom.config import load
from postroom.config.render import MASK
from tests.support.servers import make_store

SECRETS = """
[[mailers]]
name = "relay"
type = "smtp"
host = "smtp.example.net"
username = "app"
password = "relay-password-1"

[[mailers]]
name = "sg"
type = "sendgrid"
api_key = "SG.secret-key-2"
webhook.signing_key = "hook-key-3"

[[routes]]
name = "all"
mailers = ["relay", "sg"]
conditions = [{ field = "subject", operator = "starts_with", value = "Invoice" }]
"""


def invoke(*args: str, env: dict[str, str | None] | None = None, input: str = "") -> Result:
    environment: dict[str, str | None] = {"POSTROOM_CONFIG": None, **(env or {})}
    return CliRunner().invoke(
        main, list(args), env=environment, input=input, catch_exceptions=False
    )


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory holding only ./postroom.toml, whose data directory is
    relative to it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "postroom.toml").write_text('hostname = "mail.test"\ndata_dir = "data"\n')
    return tmp_path


# -- which configuration ---------------------------------------------------------------


def test_show_names_the_file_in_the_current_directory_and_the_data_directory(
    here: Path,
) -> None:
    result = invoke("config", "show")
    assert result.exit_code == 0, result.output
    first, second, third = result.stdout.splitlines()[:3]
    assert first == f"# configuration: {here / 'postroom.toml'} (from ./postroom.toml)"
    assert second == f"# data directory: {here / 'data'}"
    assert (
        third == f"# store: {here / 'data' / 'postroom.db'} (none yet; `postroom serve` makes it)"
    )


def test_the_environment_variable_wins_over_the_current_directory(here: Path) -> None:
    other = here / "elsewhere.toml"
    other.write_text('hostname = "other.test"\n')
    result = invoke("config", "show", env={"POSTROOM_CONFIG": str(other)})
    assert result.stdout.startswith(f"# configuration: {other} (from POSTROOM_CONFIG)\n")
    assert 'hostname = "other.test"' in result.stdout


def test_config_option_wins_over_the_environment_variable(here: Path) -> None:
    other = here / "elsewhere.toml"
    other.write_text('hostname = "other.test"\n')
    result = invoke("config", "show", "--config", str(other), env={"POSTROOM_CONFIG": "gone"})
    assert result.stdout.startswith(f"# configuration: {other} (from --config)\n")


def test_a_named_file_that_is_missing_is_an_error_not_the_next_one(here: Path) -> None:
    result = invoke("user", "list", env={"POSTROOM_CONFIG": str(here / "gone.toml")})
    assert (result.exit_code, result.stderr) == (
        2,
        f"postroom: {here / 'gone.toml'}: no such file\n",
    )


def test_show_prints_every_default_and_masks_every_secret(here: Path) -> None:
    (here / "postroom.toml").write_text('hostname = "mail.test"\n' + SECRETS)
    out = invoke("config", "show").stdout
    for secret in ("relay-password-1", "SG.secret-key-2", "hook-key-3"):
        assert secret not in out
    effective = tomllib.loads(out)
    assert effective["limits"]["max_recipients"] == 100  # a default, shown
    [relay] = [m for m in effective["mailers"] if m["name"] == "relay"]
    assert relay["password"] == MASK and relay["username"] == "app"
    [sendgrid] = [m for m in effective["mailers"] if m["name"] == "sg"]
    assert sendgrid["api_key"] == MASK and sendgrid["webhook"]["signing_key"] == MASK


def test_what_show_prints_loads_as_the_same_settings(here: Path) -> None:
    (here / "postroom.toml").write_text('hostname = "mail.test"\n' + SECRETS)
    (here / "shown.toml").write_text(invoke("config", "show").stdout)
    shown, original = load(here / "shown.toml"), load(here / "postroom.toml")
    secrets = {"password", "api_key", "webhook"}
    assert shown.model_dump(exclude={"mailers", "storage"}) == original.model_dump(
        exclude={"mailers", "storage"}
    )
    assert shown.storage_url == original.storage_url
    for mine, theirs in zip(shown.mailers, original.mailers, strict=True):
        assert mine.model_dump(exclude=secrets) == theirs.model_dump(exclude=secrets)


# -- config check ----------------------------------------------------------------------


def test_check_a_sound_file_prints_the_effective_configuration(here: Path) -> None:
    (here / "relay.toml").write_text(SECRETS)
    result = invoke("config", "check", "relay.toml")
    assert result.exit_code == 0
    assert result.stdout.startswith(f"# configuration: {here / 'relay.toml'} (from --config)\n")
    assert tomllib.loads(result.stdout)["routes"][0]["name"] == "all"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            '[[routes]]\nname = "all"\nmailers = ["mx"]\nconditions = [{ feild = "subject" }]',
            "routes.all.conditions[0].feild: unknown key, did you mean 'field'?"
            " (and 1 more problem)",
        ),
        (
            '[[mailers]]\nname = "relay"\ntype = "smtp"\nhots = "smtp.example.net"',
            "mailers.relay.hots: unknown key, did you mean 'host'?",
        ),
        (
            "[tls]\ncert = 'absent.pem'\nkey = 'absent.key'",
            "tls.cert: {here}/absent.pem: no such file",
        ),
    ],
    ids=["misspelled key in an inline table", "misspelled key in an array table", "tls file"],
)
def test_check_a_bad_file_is_one_line_and_exit_2(here: Path, text: str, line: str) -> None:
    (here / "bad.toml").write_text(text)
    result = invoke("config", "check", "bad.toml")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"postroom: {line.format(here=here)}\n"


def test_check_says_what_the_server_says(here: Path) -> None:
    (here / "postroom.toml").write_text('[[mailers]]\nname = "relay"\ntype = "smtp"\nport = 0\n')
    served = subprocess.run(
        [sys.executable, "-m", "postroom", "serve"],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    checked = invoke("config", "check")
    assert (checked.exit_code, checked.stderr) == (served.returncode, served.stderr)
    assert served.stderr == (
        "postroom: mailers.relay.port: must be between 1 and 65535 (and 1 more problem)\n"
    )


# -- no store made by a command that reads -----------------------------------------------

READERS = [
    ("user", "list"),
    ("user", "remove", "app@example.com"),
    ("user", "senders", "app@example.com", "--any-sender"),
    ("domain", "list"),
    ("domain", "remove", "example.com"),
    ("apikey", "list"),
    ("apikey", "revoke", "shop"),
    ("queue", "list"),
    ("queue", "show", "01JAAAAAAAAAAAAAAAAAAAAAAA"),
    ("queue", "retry", "--all"),
    ("queue", "hold", "--all"),
    ("queue", "delete", "01JAAAAAAAAAAAAAAAAAAAAAAA"),
    ("log",),
    ("log", "show", "01JAAAAAAAAAAAAAAAAAAAAAAA"),
    ("route", "explain", "--to", "ann@example.org"),
    ("mailer", "status"),
    ("db", "check"),
    ("db", "backup", "../copy.db"),
    ("send", "--to", "ann@example.org"),
]


@pytest.mark.parametrize("args", READERS, ids=" ".join)
def test_a_command_that_reads_says_there_is_no_store_and_makes_none(
    here: Path, args: tuple[str, ...]
) -> None:
    result = invoke(*args)
    assert result.exit_code == 1
    assert result.stderr == (
        f"postroom: no store at {here / 'data' / 'postroom.db'} (configuration:"
        f" {here / 'postroom.toml'} (from ./postroom.toml)); `postroom serve` makes one on"
        " its first start, or choose the configuration with --config\n"
    )
    assert [p.name for p in here.iterdir()] == ["postroom.toml"]


@pytest.mark.parametrize("args", [("config", "show"), ("config", "check"), ("dkim", "list")])
def test_commands_without_a_store_leave_the_directory_as_it_was(
    here: Path, args: tuple[str, ...]
) -> None:
    assert invoke(*args).exit_code == 0
    assert [p.name for p in here.iterdir()] == ["postroom.toml"]


def test_adding_to_the_directory_makes_the_store_and_says_so(here: Path) -> None:
    result = invoke("domain", "add", "example.com")
    assert result.exit_code == 0
    assert result.stderr == f"postroom: made a new store at {here / 'data' / 'postroom.db'}\n"
    again = invoke("domain", "list")
    assert (again.exit_code, again.stderr) == (0, "")
    assert "example.com" in again.stdout
    assert invoke("config", "show").stdout.splitlines()[2].endswith("postroom.db (exists)")


def test_a_made_store_is_used_without_a_word(here: Path) -> None:
    make_store(here / "postroom.toml")
    result = invoke("user", "add", "app@example.com", "--password-stdin", input="pw\n")
    assert result.exit_code == 0
    assert result.stderr == ""


def test_the_readme_relay_example_in_postroom_toml_is_used_from_its_directory(
    here: Path,
) -> None:
    """The README says "add to postroom.toml", then `postroom route explain`: no --config."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    after = readme.split("with direct delivery as the backup, add to `postroom.toml`", 1)[1]
    example = after.split("```toml\n", 1)[1].split("```", 1)[0]
    with (here / "postroom.toml").open("a") as config:
        config.write(example)
    make_store(here / "postroom.toml")
    result = invoke("route", "explain", "--to", "someone@example.org", "--json")
    assert result.exit_code == 0, result.output
    [explained] = json.loads(result.stdout)
    assert explained["route"] == "everything-remote"
    assert [m["name"] for m in explained["mailers"]] == ["relay", "mx"]


def test_a_reader_that_leaves_early_gets_no_error_line(here: Path) -> None:
    """`postroom config show | head -1`: the closed pipe is no problem to report."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "postroom", "config", "show"],
            cwd=here,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (1, "")

"""load(): defaults, a full file, and one clear line naming the key for each bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from postroom.config import load
from postroom.config.settings import ListenerRole, ListenerSettings, Settings, default_listeners
from postroom.errors import ConfigError

FULL = """
hostname = "mx.example.net"
data_dir = "var/data"
storage = "sqlite:///var/db/postroom.db"

[tls]
cert = "certs/fullchain.pem"
key = "certs/privkey.pem"
min_version = "1.3"

[limits]
max_message_size = 10485760
max_recipients = 50
max_line_length = 1024
command_timeout = 60.0
data_timeout = 120
max_connections = 10
max_connections_per_ip = 2
max_errors = 3
shutdown_grace = 5.0
spool_memory = 4096

[limits.auth]
max_failures = 3
window = 60.0

[log]
level = "DEBUG"
file = "logs/postroom.log"

[[listeners]]
address = "0.0.0.0"
port = 25
role = "mx"

[[listeners]]
address = "::"
port = 587
role = "submission"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "postroom.toml"
    path.write_text(text)
    return path


def test_no_file_gives_the_defaults_with_an_absolute_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load(None)
    assert settings.data_dir == tmp_path / "postroom-data"
    assert settings.storage_url == f"sqlite:///{tmp_path}/postroom-data/postroom.db"
    assert settings.listeners == default_listeners()
    assert settings.limits == Settings().limits
    assert settings.tls.cert is None and settings.tls.min_version == "1.2"


def test_an_empty_file_is_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load(write(tmp_path, "")) == load(None)


def test_a_full_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load(write(tmp_path, FULL))
    assert settings.hostname == "mx.example.net"
    assert settings.data_dir == tmp_path / "var" / "data"
    assert settings.storage_url == f"sqlite:///{tmp_path}/var/db/postroom.db"
    assert settings.tls.cert == tmp_path / "certs" / "fullchain.pem"
    assert settings.tls.key == tmp_path / "certs" / "privkey.pem"
    assert settings.tls.min_version == "1.3"
    assert settings.limits.max_message_size == 10 * 1024 * 1024
    assert settings.limits.data_timeout == 120.0
    assert settings.limits.auth.max_failures == 3
    assert settings.limits.auth.window == 60.0
    assert settings.log.level == "DEBUG"
    assert settings.log.file == tmp_path / "logs" / "postroom.log"
    assert settings.listeners == (
        ListenerSettings(address="0.0.0.0", port=25, role=ListenerRole.MX),
        ListenerSettings(address="::", port=587, role=ListenerRole.SUBMISSION),
    )


def test_absolute_paths_and_postgres_urls_are_kept(tmp_path: Path) -> None:
    text = 'data_dir = "/srv/postroom"\nstorage = "postgresql://db.example/postroom"\n'
    settings = load(write(tmp_path, text))
    assert settings.data_dir == Path("/srv/postroom")
    assert settings.storage_url == "postgresql://db.example/postroom"


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load(write(tmp_path, 'data_dir = "~/mail"')).data_dir == tmp_path / "mail"


def test_the_error_carries_key_and_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, "[limits]\nmax_recipients = 0"))
    assert caught.value.key == "limits.max_recipients"
    assert caught.value.problem == "must be at least 1"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('hostname = "m\xfcller.example"'.encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == f"{path}: is not UTF-8 text"


def test_a_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "missing.toml")
    assert str(caught.value) == f"{tmp_path / 'missing.toml'}: no such file"


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path)


def test_serve_with_a_bad_file_exits_2_with_one_line(tmp_path: Path) -> None:
    config = write(tmp_path, "[[listeners]]\nport = 99999\nrole = 'mx'\n")
    result = subprocess.run(
        [sys.executable, "-m", "postroom", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert result.stderr == "postroom: listeners[0].port: must be between 0 and 65535\n"
    assert "Traceback" not in result.stderr + result.stdout


def test_serve_with_a_toml_syntax_error_exits_2(tmp_path: Path) -> None:
    config = write(tmp_path, "[limits\n")
    result = subprocess.run(
        [sys.executable, "-m", "postroom", "--config", str(config), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"postroom: {config}: invalid TOML at line 1")


# -- mailers and routes ----------------------------------------------------------------

ROUTES = """
[[mailers]]
name = "relay"
type = "smtp"
host = "smtp.example.net"
password_env = "RELAY_PASSWORD"

[[mailers]]
name = "mx"
type = "mx"
port = 2525

[[routes]]
name = "billing"
mailers = ["relay", "mx"]
match = "any"
conditions = [
  { field = "recipient_domain", value = "customers.example" },
  { field = "header", header = "X-Stream", operator = "starts_with", value = "bill" },
]
any_of = [{ conditions = [{ field = "source", value = "billing-api", negate = true }] }]
"""


def test_mailers_add_to_the_built_in_ones_and_replace_by_name(tmp_path: Path) -> None:
    settings = load(write(tmp_path, ROUTES))
    assert [(m.name, m.type) for m in settings.mailers] == [
        ("local", "local"),
        ("mx", "mx"),
        ("relay", "smtp"),
    ]
    assert settings.mailers[1].port == 2525  # type: ignore[union-attr]
    [route] = settings.routes
    assert route.name == "billing" and route.mailers == ("relay", "mx")
    assert route.match == "any" and len(route.conditions) == 2
    assert route.conditions[1].header == "X-Stream"
    assert route.any_of[0].conditions[0].negate is True
    assert load(None).routes == ()
    assert [m.name for m in load(None).mailers] == ["local", "mx"]


def test_the_settings_survive_a_round_trip(tmp_path: Path) -> None:
    settings = load(write(tmp_path, ROUTES))
    assert Settings.model_validate(settings.model_dump()) == settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[routes]]\nname = "a"\nmailers = ["relay"]\n',
            "postroom: routes.a.mailers[0]: no mailer named 'relay' (there are 'local', 'mx')\n",
        ),
        (
            '[[routes]]\nname = "a"\nmailers = ["mx"]\n'
            "conditions = [{ field = 'body', operator = 'regex', value = '[a-' }]\n",
            "postroom: routes.a.conditions[0].value: not a valid regular expression: "
            "unterminated character set at position 0\n",
        ),
        (
            '[[mailers]]\nname = "r"\ntype = "local"\n[[mailers]]\nname = "r"\ntype = "local"\n',
            "postroom: mailers[1].name: 'r' is already the name of mailers[0]\n",
        ),
    ],
)
def test_route_and_mailer_errors_exit_2_with_one_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    config = write(tmp_path, text)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "postroom",
            "--config",
            str(config),
            "route",
            "explain",
            "--to",
            "a@example.org",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert result.stderr == expected

"""load(): defaults, a full file, and one clear line naming the key for each bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from postroom.config import load
from postroom.config.mailers import MailerSettings, MxMailerSettings
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


def problem(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, text))
    return str(caught.value)


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


def _mailer_types() -> str:
    """Every ``type`` of the mailer union, as the error lists them: 'mx', ... or 'x'."""
    names = [repr(m.model_fields["type"].default) for m in get_args(get_args(MailerSettings)[0])]
    return f"{', '.join(names[:-1])} or {names[-1]}"


BAD = [
    ('hostnme = "x"', "hostnme: unknown key, did you mean 'hostname'?"),
    (
        "[limits]\nmax_recipient = 3",
        "limits.max_recipient: unknown key, did you mean 'max_recipients'?",
    ),
    ("[limits.auth]\nzzz = 1", "limits.auth.zzz: unknown key"),
    ('[tls]\n"zz top" = 1', 'tls."zz top": unknown key'),
    (
        '[[listeners]]\nport = 25\nrole = "mx"\n[[listeners]]\nport = 70000\nrole = "submission"',
        "listeners[1].port: must be between 0 and 65535",
    ),
    ('[[listeners]]\nport = -1\nrole = "mx"', "listeners[0].port: must be between 0 and 65535"),
    (
        '[[listeners]]\nport = [25]\nrole = "mx"',
        "listeners[0].port: must be an integer, not an array",
    ),
    ('[[listeners]]\nrole = "mx"', "listeners[0].port: is required"),
    (
        '[[listeners]]\nport = 25\nrole = "smtp"',
        "listeners[0].role: must be 'mx', 'submission' or 'submissions', not 'smtp'",
    ),
    (
        "[[listeners]]\nport = 25\nrole = 1",
        "listeners[0].role: must be 'mx', 'submission' or 'submissions', not 1",
    ),
    (
        "[listeners]\nport = 25",
        "listeners: must be an array of tables ([[listeners]]), not a table",
    ),
    ("listeners = [1]", "listeners[0]: must be a table, not an integer"),
    (
        '[[listeners]]\nport = 25\nrole = "mx"\n[[listeners]]\nport = 25\nrole = "submission"',
        "postroom.toml: two listeners on 127.0.0.1:25",
    ),
    ("[limits]\nmax_recipients = 0", "limits.max_recipients: must be at least 1"),
    ("[limits]\nmax_message_size = 100", "limits.max_message_size: must be at least 1024"),
    (
        "[limits]\nmax_message_size = 2048.5",
        "limits.max_message_size: must be a whole number, not a float",
    ),
    ("[limits]\ncommand_timeout = 0", "limits.command_timeout: must be greater than 0"),
    ('[limits]\ndata_timeout = "long"', "limits.data_timeout: must be a number, not a string"),
    ("[limits]\nshutdown_grace = -1", "limits.shutdown_grace: must be at least 0"),
    ("[limits.auth]\nwindow = 0", "limits.auth.window: must be greater than 0"),
    ("limits = 5", "limits: must be a table, not an integer"),
    ("[[limits]]\nmax_errors = 1", "limits: must be a table, not an array"),
    ('[tls]\nmin_version = "1.1"', "tls.min_version: must be '1.2' or '1.3', not '1.1'"),
    ('[tls]\ncert = "cert.pem"', "tls: set both tls.cert and tls.key, or neither"),
    (
        "[tls]\ncert = 5\nkey = 6",
        "tls.cert: must be a path (a string), not an integer (and 1 more problem)",
    ),
    (
        '[log]\nlevel = "loud"',
        "log.level: must be one of 'debug', 'info', 'warning', 'error', not 'loud'",
    ),
    ("data_dir = 2024-01-01", "data_dir: must be a path (a string), not a date"),
    ("hostname = true", "hostname: must be a string, not a boolean"),
    ('hostname = "mail server"', "hostname: 'mail server' is not a valid domain name"),
    ('hostname = "[192.0.2.1]"', "hostname: must be a domain name, not an address literal"),
    ('storage = "mysql://db"', "storage: must be sqlite:///path/to/file.db or postgresql://..."),
    ('storage = "sqlite:///"', "storage: 'sqlite:///' names no database file"),
    (
        'hostnme = "x"\n[limits]\nmax_recipients = 0\nmax_errors = 0',
        "limits.max_recipients: must be at least 1 (and 2 more problems)",
    ),
    # -- [[mailers]] ---------------------------------------------------------------------
    (
        '[[mailers]]\nname = "r"\ntype = "carrier-pigeon"',
        f"mailers[0].type: must be {_mailer_types()}, not 'carrier-pigeon'",
    ),
    ('[[mailers]]\nname = "r"', "mailers[0].type: is required"),
    ('[[mailers]]\nname = "r"\ntype = "smtp"', "mailers[0].host: is required"),
    (
        '[[mailers]]\nname = "r"\ntype = "smtp"\nhost = "h"\nhots = "h"',
        "mailers[0].hots: unknown key, did you mean 'host'?",
    ),
    (
        '[[mailers]]\nname = "r"\ntype = "smtp"\nhost = "h"\ntls = "ssl"',
        "mailers[0].tls: must be 'starttls', 'implicit' or 'none', not 'ssl'",
    ),
    (
        '[[mailers]]\nname = "my relay"\ntype = "local"',
        "mailers[0].name: must be 1 to 64 letters, digits, '.', '_' or '-', starting with a "
        "letter or digit, not 'my relay'",
    ),
    ("mailers = [1]", "mailers[0]: must be a table, not an integer"),
    (
        '[[mailers]]\nname = "r"\ntype = "local"\n[[mailers]]\nname = "r"\ntype = "smtp"\n'
        'host = "h"',
        "mailers[1].name: 'r' is already the name of mailers[0]",
    ),
    # -- [[routes]] ----------------------------------------------------------------------
    (
        '[[routes]]\nname = "a"\nmailers = ["relay"]',
        "routes[0].mailers[0]: no mailer named 'relay' (there are 'local', 'mx')",
    ),
    ('[[routes]]\nname = "a"\nmailers = []', "routes[0].mailers: must have at least 1 item"),
    ('[[routes]]\nname = "a"', "routes[0].mailers: is required"),
    (
        '[[routes]]\nname = "a"\nmailers = ["mx", "mx"]',
        "routes[0].mailers[1]: 'mx' is already in the chain",
    ),
    (
        '[[routes]]\nname = "a"\nmailers = ["mx"]\n[[routes]]\nname = "a"\nmailers = ["local"]',
        "routes[1].name: 'a' is already the name of routes[0]",
    ),
    (
        '[[routes]]\nname = "default-remote"\nmailers = ["mx"]',
        "routes[0].name: 'default-remote' is the name of a built-in route",
    ),
    (
        '[[routes]]\nname = "a"\nmailers = ["mx"]\nmatch = "most"',
        "routes[0].match: must be 'all' or 'any', not 'most'",
    ),
    (
        '[[routes]]\nname = "a"\nmailers = ["mx"]\n'
        'conditions = [{ field = "subject", operator = "regex", value = "(unclosed" }]',
        "routes[0].conditions[0].value: not a valid regular expression: "
        "missing ), unterminated subpattern at position 0",
    ),
    (
        '[[routes]]\nname = "a"\nmailers = ["mx"]\n'
        'conditions = [{ field = "subject", operator = "like", value = "x" }]',
        "routes[0].conditions[0].operator: must be 'equals', 'contains', 'starts_with', "
        "'ends_with' or 'regex', not 'like'",
    ),
    (
        '[[routes]]\nname = "a"\nmailers = ["mx"]\nconditions = [{ field = "to", value = "x" }]',
        "routes[0].conditions[0].field: must be 'recipient', 'recipient_domain', 'sender', "
        "'sender_domain', 'subject', 'header', 'body' or 'source', not 'to'",
    ),
    (
        '[[routes]]\nname = "a"\nmailers = ["mx"]\n'
        'any_of = [{ all_of = [{ conditions = [{ field = "header", value = "x" }] }] }]',
        'routes[0].any_of[0].all_of[0].conditions[0].header: is required when field = "header"',
    ),
    (
        '[[routes]]\nname = "a"\nmailers = ["mx"]\n'
        'conditions = [{ field = "header", header = "X Bad", value = "x" }]',
        "routes[0].conditions[0].header: 'X Bad' is not a header name",
    ),
    (
        '[[routes]]\nname = "a"\nmailers = ["mx"]\n'
        'conditions = [{ field = "sender", header = "X-A", value = "x" }]',
        'routes[0].conditions[0].header: is only for field = "header"',
    ),
    (
        '[[routes]]\nname = "a"\nmailers = ["mx"]\n'
        'conditions = [{ field = "sender", value = "x", negated = true }]',
        "routes[0].conditions[0].negated: unknown key, did you mean 'negate'?",
    ),
    (
        'relay_networks = ["192.168.1.0/24", "lan"]',
        "relay_networks[1]: 'lan' is not an IP network (CIDR)",
    ),
    (
        '[senders.sendmail]\nsender_domains = ["exa mple.com"]',
        "senders.sendmail.sender_domains[0]: 'exa mple.com' is not a domain name",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[e for _, e in BAD])
def test_bad_input_gives_one_line_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    expected = expected.replace("postroom.toml", str(tmp_path / "postroom.toml"))
    assert problem(tmp_path, text) == expected
    assert "\n" not in expected


def test_the_error_carries_key_and_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, "[limits]\nmax_recipients = 0"))
    assert caught.value.key == "limits.max_recipients"
    assert caught.value.problem == "must be at least 1"


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    message = problem(tmp_path, 'hostname = "a.example"\n[limits]\nmax_recipients 5\n')
    assert message == (
        f"{tmp_path / 'postroom.toml'}: invalid TOML at line 3, column 16: "
        "expected '=' after a key in a key/value pair"
    )


def test_toml_error_at_end_of_document(tmp_path: Path) -> None:
    message = problem(tmp_path, "hostname = ")
    assert (
        message == f"{tmp_path / 'postroom.toml'}: invalid TOML at end of document: invalid value"
    )


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
    mx = settings.mailers[1]
    assert isinstance(mx, MxMailerSettings) and mx.port == 2525
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
            "postroom: routes[0].mailers[0]: no mailer named 'relay' (there are 'local', 'mx')\n",
        ),
        (
            '[[routes]]\nname = "a"\nmailers = ["mx"]\n'
            "conditions = [{ field = 'body', operator = 'regex', value = '[a-' }]\n",
            "postroom: routes[0].conditions[0].value: not a valid regular expression: "
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

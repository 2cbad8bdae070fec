"""One line per configuration problem, by kind: the key as the user wrote it, then what
is wrong with it. Each case is a whole file read by ``load``, as the server reads it."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from postroom.config import load
from postroom.config.mailers import MailerSettings
from postroom.config.problems import toml_error, validation_error
from postroom.config.settings import Settings
from postroom.errors import ConfigError


def _mailer_types() -> str:
    """Every ``type`` of the mailer union, as the error lists them: 'mx', ... or 'x'."""
    names = [repr(m.model_fields["type"].default) for m in get_args(get_args(MailerSettings)[0])]
    return f"{', '.join(names[:-1])} or {names[-1]}"


RELAY = '[[mailers]]\nname = "relay"\ntype = "smtp"\nhost = "smtp.example.net"\n'
ROUTE = '[[routes]]\nname = "a"\nmailers = ["mx"]\n'

# (kind, file, the line) -- the kind is the test's id.
CASES: list[tuple[str, str, str]] = [
    # -- an unknown key, with the key it most likely meant ---------------------------
    ("unknown key", 'hostnme = "x"', "hostnme: unknown key, did you mean 'hostname'?"),
    (
        "unknown key in a table",
        "[limits]\nmax_recipient = 3",
        "limits.max_recipient: unknown key, did you mean 'max_recipients'?",
    ),
    ("unknown key, nothing close", "[limits.auth]\nzzz = 1", "limits.auth.zzz: unknown key"),
    ("unknown quoted key", '[tls]\n"zz top" = 1', 'tls."zz top": unknown key'),
    (
        "unknown key in an array table",
        RELAY + 'hots = "h"',
        "mailers.relay.hots: unknown key, did you mean 'host'?",
    ),
    (
        "misspelled key in an array table is not also a missing key",
        '[[mailers]]\nname = "relay"\ntype = "smtp"\nhots = "smtp.example.net"',
        "mailers.relay.hots: unknown key, did you mean 'host'?",
    ),
    (
        "misspelled key in an inline table is not also a missing key",
        ROUTE + 'conditions = [{ feild = "subject", value = "x" }]',
        "routes.a.conditions[0].feild: unknown key, did you mean 'field'?",
    ),
    (
        "misspelled type of a mailer",
        '[[mailers]]\nname = "relay"\ntpye = "smtp"\nhost = "h"',
        "mailers.relay.tpye: unknown key, did you mean 'type'?",
    ),
    (
        "unknown key of one mailer type",
        '[[mailers]]\nname = "sg"\ntype = "sendgrid"\napi_key = "k"\nhost = "h"',
        "mailers.sg.host: unknown key",
    ),
    (
        "unknown key deep in a route",
        ROUTE + 'conditions = [{ field = "sender", value = "x", negated = true }]',
        "routes.a.conditions[0].negated: unknown key, did you mean 'negate'?",
    ),
    # -- a missing key ------------------------------------------------------------------
    ("missing key", '[[listeners]]\nrole = "mx"', "listeners[0].port: is required"),
    (
        "missing key of a mailer",
        '[[mailers]]\nname = "r"\ntype = "smtp"',
        "mailers.r.host: is required",
    ),
    ("missing type of a mailer", '[[mailers]]\nname = "r"', "mailers.r.type: is required"),
    ("missing chain of a route", '[[routes]]\nname = "a"', "routes.a.mailers: is required"),
    # -- a wrong type ---------------------------------------------------------------------
    (
        "wrong type: array for integer",
        '[[listeners]]\nport = [25]\nrole = "mx"',
        "listeners[0].port: must be an integer, not an array",
    ),
    (
        "wrong type: table for array of tables",
        "[listeners]\nport = 25",
        "listeners: must be an array of tables ([[listeners]]), not a table",
    ),
    (
        "wrong type: integer for table",
        "listeners = [1]",
        "listeners[0]: must be a table, not an integer",
    ),
    (
        "wrong type: integer for a mailer",
        "mailers = [1]",
        "mailers[0]: must be a table, not an integer",
    ),
    (
        "wrong type: float for integer",
        "[limits]\nmax_message_size = 2048.5",
        "limits.max_message_size: must be a whole number, not a float",
    ),
    (
        "wrong type: string for number",
        '[limits]\ndata_timeout = "long"',
        "limits.data_timeout: must be a number, not a string",
    ),
    ("wrong type: integer for a table", "limits = 5", "limits: must be a table, not an integer"),
    (
        "wrong type: array for a table",
        "[[limits]]\nmax_errors = 1",
        "limits: must be a table, not an array",
    ),
    (
        "wrong type: date for path",
        "data_dir = 2024-01-01",
        "data_dir: must be a path (a string), not a date",
    ),
    (
        "wrong type: boolean for string",
        "hostname = true",
        "hostname: must be a string, not a boolean",
    ),
    (
        "wrong type: string for boolean",
        '[delivery]\npaused = "maybe"',
        "delivery.paused: must be true or false, not a string",
    ),
    (
        "wrong type of a secret",
        '[[mailers]]\nname = "sg"\ntype = "sendgrid"\napi_key = 5',
        "mailers.sg.api_key: must be a string, not an integer",
    ),
    # -- out of range ---------------------------------------------------------------------
    (
        "out of range, above",
        '[[listeners]]\nport = 25\nrole = "mx"\n[[listeners]]\nport = 70000\nrole = "submission"',
        "listeners[1].port: must be between 0 and 65535",
    ),
    (
        "out of range, below",
        '[[listeners]]\nport = -1\nrole = "mx"',
        "listeners[0].port: must be between 0 and 65535",
    ),
    (
        "out of range of a mailer",
        RELAY + "port = 0",
        "mailers.relay.port: must be between 1 and 65535",
    ),
    ("at least", "[limits]\nmax_recipients = 0", "limits.max_recipients: must be at least 1"),
    ("greater than", "[limits.auth]\nwindow = 0", "limits.auth.window: must be greater than 0"),
    ("at least 0", "[limits]\nshutdown_grace = -1", "limits.shutdown_grace: must be at least 0"),
    ("at most", "workers = 65", "workers: must be between 1 and 64"),
    (
        "optional bounded integer",
        '[[mailers]]\nname = "sp"\ntype = "sparkpost"\napi_key = "k"\nsubaccount = -1',
        "mailers.sp.subaccount: must be at least 0",
    ),
    (
        "too few items",
        '[[routes]]\nname = "a"\nmailers = []',
        "routes.a.mailers: must have at least 1 item",
    ),
    # -- a bad choice ---------------------------------------------------------------------
    (
        "bad choice",
        '[[listeners]]\nport = 25\nrole = "smtp"',
        "listeners[0].role: must be 'mx', 'submission', 'submissions', 'pop3', 'pop3s',"
        " 'imap' or 'imaps', not 'smtp'",
    ),
    (
        "bad choice of another type",
        "[[listeners]]\nport = 25\nrole = 1",
        "listeners[0].role: must be 'mx', 'submission', 'submissions', 'pop3', 'pop3s',"
        " 'imap' or 'imaps', not 1",
    ),
    (
        "bad choice of a literal",
        '[log]\nformat = "xml"',
        "log.format: must be 'text' or 'json', not 'xml'",
    ),
    (
        "bad choice in a mailer",
        RELAY + 'tls = "ssl"',
        "mailers.relay.tls: must be 'starttls', 'implicit' or 'none', not 'ssl'",
    ),
    (
        "bad mailer type",
        '[[mailers]]\nname = "r"\ntype = "carrier-pigeon"',
        f"mailers.r.type: must be {_mailer_types()}, not 'carrier-pigeon'",
    ),
    (
        "bad choice in a route",
        ROUTE + 'match = "most"',
        "routes.a.match: must be 'all' or 'any', not 'most'",
    ),
    (
        "bad choice in a condition",
        ROUTE + 'conditions = [{ field = "subject", operator = "like", value = "x" }]',
        "routes.a.conditions[0].operator: must be 'equals', 'contains', 'starts_with', "
        "'ends_with' or 'regex', not 'like'",
    ),
    # -- a pattern, explained -------------------------------------------------------------
    ("pattern", '[tls]\nmin_version = "1.1"', "tls.min_version: must be '1.2' or '1.3', not '1.1'"),
    (
        "pattern of a level",
        '[log]\nlevel = "loud"',
        "log.level: must be one of 'debug', 'info', 'warning', 'error', not 'loud'",
    ),
    (
        "pattern of a name: the entry by its index",
        '[[mailers]]\nname = "my relay"\ntype = "local"',
        "mailers[0].name: must be 1 to 64 letters, digits, '.', '_' or '-', starting with a "
        "letter or digit, not 'my relay'",
    ),
    # -- a bad address, domain, network or URL --------------------------------------------
    (
        "bad CIDR",
        'relay_networks = ["192.168.1.0/24", "lan"]',
        "relay_networks[1]: 'lan' is not an IP network (CIDR)",
    ),
    (
        "bad IP address",
        '[delivery]\nsending_addresses = ["192.0.2.300"]',
        "delivery.sending_addresses[0]: '192.0.2.300' is not an IP address",
    ),
    (
        "bad domain",
        '[senders.sendmail]\nsender_domains = ["exa mple.com"]',
        "senders.sendmail.sender_domains[0]: 'exa mple.com' is not a domain name",
    ),
    (
        "bad hostname",
        'hostname = "mail server"',
        "hostname: 'mail server' is not a valid domain name",
    ),
    (
        "address literal hostname",
        'hostname = "[192.0.2.1]"',
        "hostname: must be a domain name, not an address literal",
    ),
    (
        "bad URL",
        '[[mailers]]\nname = "sg"\ntype = "sendgrid"\napi_key = "k"\nbase_url = "api.sendgrid.com"',
        "mailers.sg.base_url: 'api.sendgrid.com' is not an http:// or https:// URL",
    ),
    (
        "bad OAuth URL",
        '[[mailers]]\nname = "g"\ntype = "gmail"\nclient_id = "c"\nclient_secret = "s"\n'
        'token_url = "ftp://example.com/token"',
        "mailers.g.token_url: 'ftp://example.com/token' is not an http:// or https:// URL",
    ),
    (
        "bad storage URL",
        'storage = "mysql://db"',
        "storage: must be sqlite:///path/to/file.db or postgresql://...",
    ),
    (
        "storage URL without a file",
        'storage = "sqlite:///"',
        "storage: 'sqlite:///' names no database file",
    ),
    # -- a duplicate ----------------------------------------------------------------------
    (
        "duplicate mailer name",
        '[[mailers]]\nname = "r"\ntype = "local"\n'
        '[[mailers]]\nname = "r"\ntype = "smtp"\nhost = "h"',
        "mailers[1].name: 'r' is already the name of mailers[0]",
    ),
    (
        "duplicate route name",
        ROUTE + '[[routes]]\nname = "a"\nmailers = ["local"]',
        "routes[1].name: 'a' is already the name of routes[0]",
    ),
    (
        "duplicate listener",
        '[[listeners]]\nport = 25\nrole = "mx"\n[[listeners]]\nport = 25\nrole = "submission"',
        "listeners[1]: listeners[0] listens on 127.0.0.1:25 already",
    ),
    (
        "duplicate mailer in a chain",
        '[[routes]]\nname = "a"\nmailers = ["mx", "mx"]',
        "routes.a.mailers[1]: 'mx' is already in the chain",
    ),
    # -- what our own validators say ------------------------------------------------------
    (
        "keys that go together",
        '[tls]\ncert = "cert.pem"',
        "tls: set both tls.cert and tls.key, or neither",
    ),
    (
        "a chain naming no mailer",
        '[[routes]]\nname = "a"\nmailers = ["relay"]',
        "routes.a.mailers[0]: no mailer named 'relay' (there are 'local', 'mx')",
    ),
    (
        "a built-in route's name",
        '[[routes]]\nname = "default-remote"\nmailers = ["mx"]',
        "routes[0].name: 'default-remote' is the name of a built-in route",
    ),
    (
        "bad regular expression",
        ROUTE + 'conditions = [{ field = "subject", operator = "regex", value = "(unclosed" }]',
        "routes.a.conditions[0].value: not a valid regular expression: "
        "missing ), unterminated subpattern at position 0",
    ),
    (
        "a key that needs another",
        ROUTE + 'any_of = [{ all_of = [{ conditions = [{ field = "header", value = "x" }] }] }]',
        'routes.a.any_of[0].all_of[0].conditions[0].header: is required when field = "header"',
    ),
    (
        "a key for another choice",
        ROUTE + 'conditions = [{ field = "sender", header = "X-A", value = "x" }]',
        'routes.a.conditions[0].header: is only for field = "header"',
    ),
    (
        "both a secret and its variable",
        '[[mailers]]\nname = "sg"\ntype = "sendgrid"\napi_key = "k"\napi_key_env = "K"',
        "mailers.sg: set api_key or api_key_env, not both",
    ),
    # -- the entries as the user wrote them -----------------------------------------------
    (
        "a mailer by its name, not its index",
        '[[mailers]]\nname = "backup"\ntype = "local"\n' + RELAY + "port = 99999",
        "mailers.relay.port: must be between 1 and 65535",
    ),
    (
        "a name that is not a bare key is quoted",
        '[[mailers]]\nname = "relay.eu"\ntype = "smtp"\nhost = "h"\nport = 0',
        'mailers."relay.eu".port: must be between 1 and 65535',
    ),
    (
        "names given twice: the entries by index",
        '[[mailers]]\nname = "r"\ntype = "local"\n[[mailers]]\nname = "r"\ntype = "smtp"',
        "mailers[1].host: is required",
    ),
    # -- several problems -----------------------------------------------------------------
    (
        "an alert without its destination",
        '[[alerts]]\nname = "chat"\nformat = "slack"',
        "alerts.chat.url: a slack alert needs url or url_env",
    ),
    (
        "several problems: the first and a count",
        "[tls]\ncert = 5\nkey = 6",
        "tls.cert: must be a path (a string), not an integer (and 1 more problem)",
    ),
    (
        "several problems: an unknown key first",
        "[limits]\nmax_recipients = 0\nmax_errors = 0\n[dns]\ntimeot = 3",
        "dns.timeot: unknown key, did you mean 'timeout'? (and 2 more problems)",
    ),
]


def _problem(tmp_path: Path, text: str) -> str:
    path = tmp_path / "postroom.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    return str(caught.value)


@pytest.mark.parametrize(("text", "line"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_kind_of_problem_is_one_line_naming_the_key(
    tmp_path: Path, text: str, line: str
) -> None:
    assert _problem(tmp_path, text) == line
    assert "\n" not in line


def _errors(text: str) -> tuple[dict[str, object], list[ErrorDetails]]:
    data = tomllib.loads(text)
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate(data)
    return data, caught.value.errors()


@pytest.mark.parametrize(
    "text", [c[1] for c in CASES if c[2].startswith(("mailers", "routes", "limits", "listeners"))]
)
def test_the_line_never_depends_on_pydantic_s_wording(text: str) -> None:
    """Only the documented type codes, locations, inputs and contexts are read: the same
    errors with every English message blanked give the same line."""
    data, errors = _errors(text)
    blanked = [error.copy() for error in errors]
    for error in blanked:
        error["msg"] = ""
    assert str(validation_error(blanked, data, "f.toml")) == str(
        validation_error(errors, data, "f.toml")
    )


def test_an_error_type_without_a_sentence_still_names_the_key_and_the_value() -> None:
    error = ErrorDetails(
        type="some_future_check", loc=("limits", "max_errors"), msg="", input=7, ctx={}
    )
    assert str(validation_error([error], {"limits": {"max_errors": 7}}, "f.toml")) == (
        "limits.max_errors: 7 is not valid here (some_future_check)"
    )


def test_the_error_carries_key_and_problem(tmp_path: Path) -> None:
    path = tmp_path / "postroom.toml"
    path.write_text(RELAY + "port = 0")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.key == "mailers.relay.port"
    assert caught.value.problem == "must be between 1 and 65535"


# -- TOML syntax ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            'hostname = "a.example"\n[limits]\nmax_recipients 5\n',
            "invalid TOML at line 3, column 16: expected '=' after a key in a key/value pair",
        ),
        ("hostname = ", "invalid TOML at end of document: invalid value"),
        (
            'hostname = "a"\nhostname = "b"\n',
            "invalid TOML at line 2, column 15: cannot overwrite a value",
        ),
        (
            "[limits\n",
            "invalid TOML at line 1, column 8: expected ']' at the end of a table declaration",
        ),
    ],
    ids=["syntax", "end of document", "key given twice", "unclosed table"],
)
def test_toml_syntax_names_the_file_line_and_column(
    tmp_path: Path, text: str, problem: str
) -> None:
    assert _problem(tmp_path, text) == f"{tmp_path / 'postroom.toml'}: {problem}"


def test_toml_error_without_a_position() -> None:
    assert str(toml_error(tomllib.TOMLDecodeError("Invalid statement"), "f.toml")) == (
        "f.toml: invalid TOML: invalid statement"
    )

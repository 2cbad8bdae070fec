"""The ready line: what listens where (with each port's role), the certificate, the
configuration, the data directory and version, and the first step while no user exists.
Built from a real in-process server; tests/support parses it as the tests' processes do."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from postroom.config.discover import ConfigSource
from postroom.runtime import ready_line
from tests.support.servers import ready_ports
from tests.support.thread import ServerThread


def test_the_line_names_roles_certificate_config_data_and_the_first_step(
    make_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    server = make_server()
    source = ConfigSource(tmp_path / "postroom.toml", "./postroom.toml")
    line = ready_line(server.server, source, users=False)
    mx, submission, submissions = (server.ports[r] for r in ("mx", "submission", "submissions"))
    data = server.data_dir
    assert line == (
        f"postroom {version('postroom')} ready: SMTP on 127.0.0.1:{mx} mx,"
        f" 127.0.0.1:{submission} submission (STARTTLS),"
        f" 127.0.0.1:{submissions} submissions (TLS);"
        f" API http://127.0.0.1:{server.api_port};"
        f" dashboard off until an admin exists;"
        f" certificate {data}/tls/cert.pem (self-signed, made now);"
        f" config {tmp_path}/postroom.toml (from ./postroom.toml);"
        f" data in {data}; 1 process;"
        f" no users yet: postroom --config {tmp_path}/postroom.toml user add USER@DOMAIN"
    )
    assert ready_ports(line) == (
        {"mx": mx, "submission": submission, "submissions": submissions},
        server.api_port,
    )


def test_with_users_and_defaults_the_first_step_is_gone(
    make_server: Callable[..., ServerThread],
) -> None:
    server = make_server(api={"enabled": False})
    line = ready_line(server.server, ConfigSource(None, "built-in defaults"), users=True)
    assert "; API off; dashboard off;" in line
    assert "; config built-in defaults;" in line
    assert "no users yet" not in line
    ready = ready_ports(line)
    assert ready is not None and ready[1] is None


def test_with_an_admin_the_line_says_where_the_dashboard_is(
    make_server: Callable[..., ServerThread],
) -> None:
    server = make_server()
    line = ready_line(server.server, ConfigSource(None, "defaults"), users=True, admins=True)
    assert f"; dashboard http://127.0.0.1:{server.api_port}/dashboard/;" in line


def test_a_second_start_reuses_the_certificate(
    make_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    first = make_server(data_dir=tmp_path / "data")
    first.stop()
    second = make_server(data_dir=tmp_path / "data")
    line = ready_line(second.server, ConfigSource(None, "built-in defaults"), users=False)
    assert f"; certificate {tmp_path}/data/tls/cert.pem (self-signed);" in line
    assert "; no users yet: postroom user add USER@DOMAIN" in line


def test_pop3_listeners_are_named_after_smtp(
    make_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    roles = ("mx", "pop3", "pop3s")
    listeners = [{"address": "127.0.0.1", "port": 0, "role": role} for role in roles]
    server = make_server(listeners=listeners)
    line = ready_line(server.server, ConfigSource(None, "built-in defaults"), users=True)
    mx, pop3, pop3s = (server.ports[r] for r in roles)
    assert line.startswith(
        f"postroom {version('postroom')} ready: SMTP on 127.0.0.1:{mx} mx;"
        f" POP3 on 127.0.0.1:{pop3} pop3 (STLS), 127.0.0.1:{pop3s} pop3s (TLS);"
        f" API http://127.0.0.1:{server.api_port};"
    )
    assert ready_ports(line) == ({"mx": mx, "pop3": pop3, "pop3s": pop3s}, server.api_port)

"""`postroom serve` as a real process serves the API on the port its ready line names, and
a key made with `postroom apikey create` works against it; off when disabled."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.api.conftest import MESSAGE
from tests.support.servers import cli_out as cli
from tests.support.servers import start_process, write_config
from tests.support.thread import ServerThread


def test_the_served_api_takes_mail_with_a_cli_made_key(tmp_path: Path) -> None:
    config = write_config(tmp_path / "postroom.toml", tmp_path / "data")
    log = tmp_path / "postroom.log"
    running = start_process(config, log)
    try:
        assert running.api_port is not None and running.api_port != 8025
        cli(config, "domain", "add", "example.com")  # a key sends as the local domains
        token = cli(config, "apikey", "create", "deploy").splitlines()[-1]
        url = f"http://127.0.0.1:{running.api_port}"
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
            answer = client.post("/api/v1/messages", json=MESSAGE)
            assert answer.status_code == 202, answer.text
            queue_id = answer.json()["id"]
        assert queue_id in cli(config, "log", "show", queue_id)
        assert '"source":"api"' in log.read_text()  # the MessageQueued log line
    finally:
        running.signal(signal.SIGTERM)
    assert running.wait() == 0


def test_the_api_can_be_turned_off(make_server: Callable[..., ServerThread]) -> None:
    server = make_server(api={"enabled": False})
    assert server.server.api is None
    assert server.server.api_port is None


def serve_with_a_taken_port(tmp_path: Path, *, api: bool) -> tuple[int, str]:
    """`postroom serve` while a socket here holds the API port (``api``) or the mx port:
    the port, and what the server printed on stderr."""
    tmp_path.mkdir(exist_ok=True)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(
            tmp_path / "postroom.toml",
            tmp_path / "data",
            extra=f"[api]\nport = {port}\n" if api else "",
            ports=None if api else {"mx": port},
        )
        env = {**os.environ, "POSTROOM_CONFIG": str(config)}
        result = subprocess.run(
            [sys.executable, "-m", "postroom", "serve"],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    return port, result.stderr


def test_a_busy_api_port_is_one_line_naming_the_address_and_port(tmp_path: Path) -> None:
    port, stderr = serve_with_a_taken_port(tmp_path, api=True)
    assert stderr == (
        "postroom: cannot listen: error while attempting to bind on address"
        f" ('127.0.0.1', {port}): address already in use\n"
    )


def test_a_busy_api_port_reads_as_a_busy_smtp_port_does(tmp_path: Path) -> None:
    api_port, api = serve_with_a_taken_port(tmp_path / "api", api=True)
    smtp_port, smtp = serve_with_a_taken_port(tmp_path / "smtp", api=False)
    assert api.replace(str(api_port), "PORT") == smtp.replace(str(smtp_port), "PORT")

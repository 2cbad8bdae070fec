"""The Haraka submission peer's set-up (Haraka itself is installed only by hand, for the
full benchmark): TLS on both ports, implicit on ``smtps_port``, AUTH from its flat file,
and relayed mail held by the fsync'ing queue plugin."""

from __future__ import annotations

from pathlib import Path

from bench.systems.haraka import HarakaSystem
from bench.systems.submission import PASSWORD, USERNAME


def test_haraka_submission_listens_with_tls_and_auth(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "smtp.ini").write_text("listen=127.0.0.1:2500\nnodes=0\n")
    system = HarakaSystem(fsync=True, submission=True)
    assert system.name == "haraka-auth" and system.durable
    first = system._configure_submission(config, (2587, 2465), tmp_path)
    assert first.splitlines() == ["tls", "auth/flat_file"]  # before the queue plugin
    smtp = (config / "smtp.ini").read_text().splitlines()
    assert smtp == [
        "listen=127.0.0.1:2500,127.0.0.1:2587,127.0.0.1:2465",
        "nodes=0",
        "smtps_port=2465",
    ]
    assert (config / "tls_cert.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" in (config / "tls_key.pem").read_text()
    users = (config / "auth_flat_file.ini").read_text()
    assert "methods=PLAIN,LOGIN" in users and f"{USERNAME}={PASSWORD}" in users

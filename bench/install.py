"""Install the peers, idempotently: Postfix and Dovecot (Debian), Haraka (npm), aiosmtpd
(own venv), and build the TLS load generator (C, against Debian's OpenSSL)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.paths import (
    DOVEADM,
    DOVECOT,
    LOADGEN,
    LOADGEN_SOURCE,
    PEERS,
    POSTCONF,
    POSTFIX,
    SMTP_SINK,
    SMTP_SOURCE,
)
from bench.procs import SetupError

__all__ = [
    "AIOSMTPD_VERSION",
    "HARAKA_VERSION",
    "aiosmtpd_python",
    "ensure_aiosmtpd",
    "ensure_dovecot",
    "ensure_haraka",
    "ensure_loadgen",
    "ensure_postfix",
    "haraka_dir",
    "peer_versions",
]

HARAKA_VERSION = "3.3.4"
AIOSMTPD_VERSION = "1.4.6"
_QUIET_APT = {"DEBIAN_FRONTEND": "noninteractive"}


def _run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 900) -> None:
    full_env = {**os.environ, **(env or {})}
    done = subprocess.run(
        argv, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()[-20:]
        raise SetupError(f"{' '.join(argv)} failed ({done.returncode}):\n" + "\n".join(output))


def _apt_install(packages: list[str]) -> None:
    if os.geteuid() != 0:
        raise SetupError(f"not root: install the Debian packages {' '.join(packages)} first")
    if "postfix" in packages:
        # "No configuration": no system-wide main.cf and no Postfix started on port 25;
        # the harness runs its own instances on loopback ports.
        selection = "postfix postfix/main_mailer_type select No configuration\n"
        subprocess.run(
            ["debconf-set-selections"], input=selection, text=True, check=False, timeout=60
        )
    argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    try:
        _run(argv, env=_QUIET_APT)
    except SetupError:
        _run(["apt-get", "update", "-q"], env=_QUIET_APT)
        _run(argv, env=_QUIET_APT)


def ensure_postfix(allow_install: bool) -> None:
    """Postfix, smtp-source and smtp-sink (all in Debian's ``postfix`` package)."""
    if all(p.exists() for p in (SMTP_SOURCE, SMTP_SINK, POSTFIX, POSTCONF)):
        return
    if not allow_install:
        raise SetupError("Postfix's smtp-source/smtp-sink are missing: apt-get install postfix")
    _apt_install(["postfix"])


def ensure_dovecot(allow_install: bool) -> None:
    """Dovecot (Debian's ``dovecot-core``): Postfix's SASL for the submission peer. Only
    its auth service runs, as a private instance; the package's own service is not used."""
    if DOVECOT.exists() and DOVEADM.exists():
        return
    if not allow_install:
        raise SetupError("Dovecot is missing: apt-get install dovecot-core")
    _apt_install(["dovecot-core"])


def ensure_loadgen(allow_install: bool) -> Path:
    """Build bench/loadgen/smtp-tls-source.c into bench/.peers (again when it changed)."""
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= LOADGEN_SOURCE.stat().st_mtime:
        return LOADGEN
    if not (shutil.which("cc") and Path("/usr/include/openssl/ssl.h").exists()):
        if not allow_install:
            raise SetupError("building smtp-tls-source needs a C compiler and libssl-dev")
        _apt_install(["gcc", "libc6-dev", "libssl-dev"])
    LOADGEN.parent.mkdir(parents=True, exist_ok=True)
    built = LOADGEN.with_suffix(".new")
    _run(["cc", "-O2", "-o", str(built), str(LOADGEN_SOURCE), "-lssl", "-lcrypto"])
    built.replace(LOADGEN)
    return LOADGEN


def haraka_dir() -> Path:
    return PEERS / "haraka"


def _installed_haraka() -> str | None:
    package = haraka_dir() / "node_modules" / "Haraka" / "package.json"
    try:
        version = json.loads(package.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None
    return str(version)


def ensure_haraka(allow_install: bool) -> None:
    """Haraka from npm into bench/.peers/haraka (EBADENGINE warnings are harmless)."""
    if _installed_haraka() == HARAKA_VERSION and shutil.which("node"):
        return
    if not allow_install:
        raise SetupError(f"Haraka {HARAKA_VERSION} is not installed in {haraka_dir()}")
    if not (shutil.which("node") and shutil.which("npm")):
        _apt_install(["nodejs", "npm"])
    target = haraka_dir()
    target.mkdir(parents=True, exist_ok=True)
    manifest = target / "package.json"
    if not manifest.exists():
        manifest.write_text('{"name": "postroom-bench-haraka", "private": true}\n')
    npm = shutil.which("npm") or "npm"
    _run(
        [
            npm,
            "install",
            "--prefix",
            str(target),
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            f"Haraka@{HARAKA_VERSION}",
        ],
        env={"npm_config_update_notifier": "false"},
    )
    if _installed_haraka() != HARAKA_VERSION:
        raise SetupError(f"npm did not install Haraka {HARAKA_VERSION} into {target}")


def aiosmtpd_python() -> Path:
    return PEERS / "aiosmtpd-venv" / "bin" / "python"


def _installed_aiosmtpd() -> str | None:
    python = aiosmtpd_python()
    if not python.exists():
        return None
    done = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('aiosmtpd'))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_aiosmtpd(allow_install: bool) -> None:
    """aiosmtpd in its own venv (bench/.peers/aiosmtpd-venv), apart from postroom's."""
    if _installed_aiosmtpd() == AIOSMTPD_VERSION:
        return
    if not allow_install:
        raise SetupError(f"aiosmtpd {AIOSMTPD_VERSION} is not installed in {aiosmtpd_python()}")
    venv = aiosmtpd_python().parent.parent
    if not aiosmtpd_python().exists():
        _run([sys.executable, "-m", "venv", str(venv)])
    _run(
        [
            str(aiosmtpd_python()),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            f"aiosmtpd=={AIOSMTPD_VERSION}",
        ]
    )
    if _installed_aiosmtpd() != AIOSMTPD_VERSION:
        raise SetupError(f"pip did not install aiosmtpd {AIOSMTPD_VERSION} into {venv}")


def _command_output(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def peer_versions() -> dict[str, str | None]:
    postfix = _command_output([str(POSTCONF), "-d", "-h", "mail_version"])
    return {
        "postfix": postfix,
        "haraka": _installed_haraka(),
        "node": _command_output(["node", "--version"]),
        "aiosmtpd": _installed_aiosmtpd(),
        "dovecot": _command_output([str(DOVECOT), "--version"]) if DOVECOT.exists() else None,
    }

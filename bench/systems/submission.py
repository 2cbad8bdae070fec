"""Postfix as a submission server, with Dovecot SASL: what a self-hoster runs instead.

A private Postfix (as ``postfix.py``) with two more smtpd services: 587-style (STARTTLS
required, ``smtpd_tls_auth_only``) and 465-style (``smtpd_tls_wrappermode``), both with
``smtpd_sasl_type = dovecot`` and every accepted message put in the hold queue, as the
accept workloads do. Postfix's TLS session cache and tickets are on (``tlsmgr``), as in
Debian's default master.cf. A private Dovecot runs only its auth service (no protocols),
a ``passwd-file`` passdb with the password hashed in one scheme (Dovecot's ``ARGON2ID``,
or ``SHA512-CRYPT``, the scheme most installations use), and its auth cache on
(``auth_cache_size = 10M``, ``auth_cache_ttl = 1 hour``) as its docs recommend for busy
servers. The certificate is an ECDSA P-256 one made with ``openssl``, the kind postroom
makes for itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.paths import DOVEADM, DOVECOT
from bench.procs import SetupError, free_port, log_tail, wait_for_greeting, wait_pid_gone
from bench.systems.base import DOMAIN, RECIPIENT, Instance
from bench.systems.postfix import start_postfix

__all__ = ["PASSWORD", "USERNAME", "PostfixDovecotSystem", "make_certificate"]

USERNAME = RECIPIENT  # the one user every system has
PASSWORD = "bench-pass"

_DOVECOT_CONF = """\
base_dir = {base}
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = none
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain login
auth_cache_size = 10M
auth_cache_ttl = 1 hour
auth_cache_negative_ttl = 1 hour
passdb {{
  driver = passwd-file
  args = {root}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  unix_listener auth-postfix {{
    mode = 0666
  }}
}}
"""

_SUBMISSION = """\
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path={auth}
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=check_client_access,static:HOLD
"""

_MASTER_EXTRA = """\
127.0.0.1:{submission} inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_auth_only=yes
{options}127.0.0.1:{submissions} inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
{options}tlsmgr    unix  -       -       n       1000?   1       tlsmgr
"""

_MAIN_EXTRA = """\
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
smtpd_tls_session_cache_database = btree:{data}/smtpd_scache
smtpd_tls_loglevel = 0
smtpd_recipient_restrictions = check_client_access static:HOLD
"""


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed ECDSA P-256 certificate for ``postfix.<DOMAIN>``."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    argv += ["-nodes", "-days", "30", "-subj", f"/CN=postfix.{DOMAIN}"]
    done = subprocess.run(
        [*argv, "-keyout", str(key), "-out", str(cert)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise SetupError(f"openssl req failed: {done.stderr.strip()}")
    return cert, key


def _hash(scheme: str) -> str:
    done = subprocess.run(
        [str(DOVEADM), "pw", "-s", scheme, "-p", PASSWORD],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise SetupError(f"doveadm pw -s {scheme} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@dataclass
class _Dovecot:
    root: Path

    base: Path  # short: unix socket paths are limited to 107 bytes

    def master_pid(self) -> int:
        return int((self.base / "master.pid").read_text().split()[0])

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            pid = self.master_pid()
            os.kill(pid, signal.SIGTERM)
            if not wait_pid_gone(pid, 20):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)


def _start_dovecot(root: Path, scheme: str) -> _Dovecot:
    root.mkdir()
    (root / "users").write_text(f"{USERNAME}:{_hash(scheme)}\n")
    conf = root / "dovecot.conf"
    base = Path(tempfile.mkdtemp(prefix="dovecot-"))
    base.chmod(0o755)
    conf.write_text(_DOVECOT_CONF.format(root=root, base=base))
    said = root / "dovecot.out"
    with open(said, "wb") as out:  # not a pipe: the daemon it leaves behind keeps it open
        done = subprocess.run(
            [str(DOVECOT), "-c", str(conf)], stdout=out, stderr=out, timeout=60, check=False
        )
    if done.returncode != 0:
        raise SetupError(f"dovecot failed to start: {log_tail(said)}")
    dovecot = _Dovecot(root, base)
    for _ in range(100):
        if (base / "auth-postfix").exists() and (base / "master.pid").exists():
            return dovecot
        time.sleep(0.05)
    dovecot.stop()
    raise SetupError(f"dovecot's auth socket did not appear in {base}")


@dataclass
class PostfixDovecotSystem:
    """Postfix submission with Dovecot SASL, passwords in ``scheme``."""

    scheme: str = "SHA512-CRYPT"
    name: str = ""
    label: str = ""
    durable: bool = True
    multi_process: bool = True

    def __post_init__(self) -> None:
        short = self.scheme.lower().replace("-", "")
        self.name = f"postfix-dovecot-{short}"
        self.label = f"Postfix + Dovecot SASL ({self.scheme}, auth cache), hold queue"

    def start(self, rundir: Path) -> Instance:
        dovecot = _start_dovecot(rundir / "dovecot", self.scheme)
        try:
            cert, key = make_certificate(rundir)
            submission, submissions = free_port(), free_port()
            options = _SUBMISSION.format(auth=dovecot.base / "auth-postfix")
            master = _MASTER_EXTRA.format(
                submission=submission, submissions=submissions, options=options
            )
            main = _MAIN_EXTRA.format(cert=cert, key=key, data=rundir / "postfix" / "data")
            postfix = start_postfix(rundir, main, master)
        except BaseException:
            dovecot.stop()
            raise
        try:
            wait_for_greeting(submission, 30, None, postfix.maillog)
        except SetupError:
            postfix.stop()
            dovecot.stop()
            raise

        def stop() -> None:
            postfix.stop()
            dovecot.stop()

        return Instance(
            port=postfix.port,
            pid=postfix.master_pid(),
            stop=stop,
            log=postfix.maillog,
            stored=lambda: postfix.in_queue("hold"),
            submission_port=submission,
            submissions_port=submissions,
            more_pids=[dovecot.master_pid()],
        )

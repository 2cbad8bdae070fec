"""Where things are: the repository, the installed peers, Postfix's programs."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "BENCH",
    "DOVEADM",
    "DOVECOT",
    "LOADGEN",
    "LOADGEN_SOURCE",
    "PEERS",
    "POSTCONF",
    "POSTFIX",
    "REPO",
    "RESULTS",
    "SMTP_SINK",
    "SMTP_SOURCE",
]

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PEERS = BENCH / ".peers"  # installed by the harness, ignored by git
RESULTS = BENCH / "results"

SMTP_SOURCE = Path("/usr/sbin/smtp-source")
SMTP_SINK = Path("/usr/sbin/smtp-sink")
POSTFIX = Path("/usr/sbin/postfix")
POSTCONF = Path("/usr/sbin/postconf")
DOVECOT = Path("/usr/sbin/dovecot")
DOVEADM = Path("/usr/bin/doveadm")
# The TLS and AUTH load generator: C, built by the harness into PEERS.
LOADGEN_SOURCE = BENCH / "loadgen" / "smtp-tls-source.c"
LOADGEN = PEERS / "smtp-tls-source"

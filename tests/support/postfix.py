"""A private Postfix as a remote MX for end-to-end tests: its own configuration and
queue in a temporary directory, one loopback port, no DNS, no chroot.

It takes mail for ``domain`` at SMTP without knowing its users (``local_recipient_maps``
empty, as a Postfix behind a gateway), so mail to an unknown user is accepted, then
bounced by local(8) with a real RFC 3464 report from bounce(8), which Postfix sends to
the envelope sender through ``relayhost``: the test's postroom mx listener.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.servers import free_port

__all__ = ["POSTFIX", "postfix_mx"]

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"

_MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.{domain}
mydomain = {domain}
mydestination = {domain}
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{relay_port}
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
smtp_tls_security_level = none
biff = no
queue_run_delay = 1s
"""


def _greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            return conn.recv(4).startswith(b"220")
    except OSError:
        return False


@contextmanager
def postfix_mx(*, domain: str, relay_port: int) -> Iterator[tuple[int, Path]]:
    """A started Postfix for ``domain`` that sends its bounces to 127.0.0.1:``relay_port``;
    its port and its log file. Its files live in a directory of its own under the
    system's temporary directory: pytest's are private to root, and the postfix user
    must walk to its queue."""
    root = Path(tempfile.mkdtemp(prefix="postroom-postfix-"))
    try:
        root.chmod(0o755)
        with _started(root, domain, relay_port) as started:
            yield started
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def _started(root: Path, domain: str, relay_port: int) -> Iterator[tuple[int, Path]]:
    (root / "etc").mkdir()
    (root / "queue").mkdir()
    port = free_port()
    (root / "etc" / "master.cf").write_text(_MASTER_CF.format(port=port))
    (root / "etc" / "main.cf").write_text(
        _MAIN_CF.format(root=root, domain=domain, relay_port=relay_port)
    )
    command = [POSTFIX, "-c", str(root / "etc")]
    started = subprocess.run([*command, "start"], capture_output=True, text=True, check=False)
    if started.returncode != 0:
        log = (root / "maillog").read_text() if (root / "maillog").exists() else ""
        raise RuntimeError(f"postfix start failed: {started.stdout}{started.stderr}{log}")
    try:
        deadline = time.monotonic() + 30
        while not _greets(port):
            if time.monotonic() > deadline:
                raise RuntimeError("postfix did not greet within 30 s")
            time.sleep(0.1)
        yield port, root / "maillog"
    finally:
        subprocess.run([*command, "stop"], capture_output=True, check=False)

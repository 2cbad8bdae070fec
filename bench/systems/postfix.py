"""A private Postfix instance: its own config and queue directories, loopback ports only.

Chroot off, logging to a file through postlogd (there is no syslog), no DNS. Two roles:
accepting into the durable hold queue (nothing is delivered), and relaying everything to an
smtp-sink through its ``smtp`` transport.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.paths import POSTFIX
from bench.procs import SetupError, free_port, log_tail, wait_for_greeting, wait_pid_gone
from bench.systems.base import DOMAIN, LARGE_LIMIT, Instance

__all__ = ["PostfixHoldSystem", "PostfixInstance", "count_files", "start_postfix"]

# Debian's master.cf with chroot off and smtpd on one loopback port; services not used
# here (tlsmgr, lmtp, virtual, pipe transports) left out.
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
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
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
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
smtpd_relay_restrictions = permit_mynetworks, reject
message_size_limit = {size}
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
biff = no
"""

QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")


def count_files(directory: Path) -> int:
    total = 0
    for _root, _dirs, files in os.walk(directory):
        total += len(files)
    return total


@dataclass
class PostfixInstance:
    root: Path
    port: int

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def queue_dir(self) -> Path:
        return self.root / "queue"

    @property
    def maillog(self) -> Path:
        return self.root / "maillog"

    def master_pid(self) -> int:
        pidfile = self.queue_dir / "pid" / "master.pid"
        return int(pidfile.read_text().split()[0])

    def postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(POSTFIX), "-c", str(self.config_dir), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def in_queue(self, *names: str) -> int:
        return sum(count_files(self.queue_dir / name) for name in names or QUEUES)

    def stop(self) -> None:
        try:
            pid = self.master_pid()
        except (OSError, ValueError):
            return
        self.postfix("stop")
        if not wait_pid_gone(pid, 30):
            self.postfix("abort")
            wait_pid_gone(pid, 10)


def start_postfix(rundir: Path, extra_main: str, extra_master: str = "") -> PostfixInstance:
    """Configure and start a private Postfix whose files all live in ``rundir``/postfix;
    ``extra_master`` adds services to master.cf."""
    root = rundir / "postfix"
    longest = root / "queue" / "private" / "discard"  # of the sockets master.cf makes
    if len(str(longest)) > 107:  # sun_path: Postfix would fail to start without a word
        raise SetupError(f"the run directory's path is too long for Postfix's sockets: {root}")
    (root / "etc").mkdir(parents=True)
    (root / "queue").mkdir()
    for path in (rundir, root):  # the postfix user must be able to walk to its queue
        path.chmod(0o755)
    port = free_port()
    (root / "etc" / "master.cf").write_text(_MASTER_CF.format(port=port) + extra_master)
    main = _MAIN_CF.format(root=root, domain=DOMAIN, size=LARGE_LIMIT)
    (root / "etc" / "main.cf").write_text(main + extra_main)
    instance = PostfixInstance(root, port)
    started = instance.postfix("start")
    if started.returncode != 0:
        detail = (started.stdout + started.stderr).strip() or log_tail(instance.maillog)
        raise SetupError(f"postfix start failed: {detail}")
    try:
        wait_for_greeting(port, 30, None, instance.maillog)
    except SetupError:
        instance.stop()
        raise
    return instance


@dataclass
class PostfixHoldSystem:
    """Accepts into the durable hold queue: cleanup writes and fsyncs, nothing is delivered."""

    name: str = "postfix-hold"
    label: str = "Postfix, durable hold queue"
    durable: bool = True
    multi_process: bool = True

    def start(self, rundir: Path) -> Instance:
        instance = start_postfix(
            rundir, "smtpd_recipient_restrictions = check_client_access static:HOLD\n"
        )
        return Instance(
            port=instance.port,
            pid=instance.master_pid(),
            stop=instance.stop,
            log=instance.maillog,
            stored=lambda: instance.in_queue("hold"),
        )

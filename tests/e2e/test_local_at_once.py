"""kill -9 while local mail is being delivered by the processes that accepted it
(``workers = 2``): after a restart every acknowledged message is in the Maildir, and
a second copy exists only of a message whose delivery was not yet recorded when the
processes died (the window docs/architecture.md names, as Postfix has one)."""

from __future__ import annotations

import asyncio
import random
import re
import signal
import smtplib
from collections import Counter
from pathlib import Path

import pytest

from tests.support.crashcheck import assert_at_least_once, tokens, unsettled
from tests.support.depth import examples
from tests.support.processes import kill_all_amid_load, one_per_connection
from tests.support.servers import RunningProcess, run_cli, start_process, wait_for, write_config

SUBJECT = re.compile(rb"^Subject: at-once (\S+)$", re.MULTILINE)
RECIPIENT = "rcpt@example.test"


def submit(client: smtplib.SMTP, token: str) -> None:
    body = f"Subject: at-once {token}\r\n\r\nhello {token}\r\n".encode()
    client.sendmail("someone@remote.test", [RECIPIENT], body)  # raises unless 250


def in_new(maildir: Path) -> Counter[str]:
    """How many copies of each token are in ``new/``."""
    return tokens((path.read_bytes() for path in (maildir / "new").iterdir()), SUBJECT)


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(examples(1)))  # each round kills at another moment
def test_kill_9_during_local_delivery_loses_nothing_and_repeats_only_the_unrecorded(
    tmp_path: Path, round_: int
) -> None:
    data = tmp_path / "data"
    # A short lease: the restarted server takes over what the dead one held within it.
    config = write_config(
        tmp_path / "postroom.toml", data, "[delivery]\nlease = 2.0\n", top="workers = 2\n"
    )
    for args in (("domain", "add", "example.test"), ("user", "add", RECIPIENT, "--password-stdin")):
        assert run_cli(config, *args, stdin="a long password\n").returncode == 0
    proc: RunningProcess = start_process(config, tmp_path / "postroom.log")
    target = random.Random(round_).randint(40, 160)
    port = proc.ports["mx"]
    acked = kill_all_amid_load(proc, one_per_connection(port, submit), senders=8, target=target)
    assert len(acked) >= target
    maildir = data / "mail" / "example.test" / "rcpt" / "Maildir"
    not_recorded = asyncio.run(unsettled(data / "postroom.db", SUBJECT))

    restarted = start_process(config, tmp_path / "postroom.log")
    try:
        wait_for(lambda: set(acked) <= set(in_new(maildir)), within=60)
        wait_for(lambda: not asyncio.run(unsettled(data / "postroom.db", SUBJECT)), within=60)
    finally:
        restarted.signal(signal.SIGTERM)
        restarted.wait()
    assert_at_least_once(acked, in_new(maildir), not_recorded)

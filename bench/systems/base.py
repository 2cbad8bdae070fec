"""What every system under test provides: start it in a run directory, get an Instance."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = [
    "DOMAIN",
    "LARGE_LIMIT",
    "RECIPIENT",
    "SENDER",
    "Instance",
    "System",
]

DOMAIN = "bench.test"
RECIPIENT = f"bench@{DOMAIN}"  # one local user on every system
SENDER = "load@client.test"
LARGE_LIMIT = 30 * 1024 * 1024  # every system's message size limit: room for 20 MiB + headers


def _nothing() -> int | None:
    return None


@dataclass
class Instance:
    """One running server."""

    port: int
    pid: int  # root of its process tree: CPU and memory are read from here
    stop: Callable[[], None]
    log: Path
    stored: Callable[[], int | None] = _nothing  # messages kept on disk; None: keeps none
    notes: list[str] = field(default_factory=list)
    # More process trees whose CPU is the server's: a database server it uses.
    more_pids: list[int] = field(default_factory=list)


class System(Protocol):
    name: str  # short, for --systems and the JSON: "postfix-hold"
    label: str  # for the table: "Postfix, durable hold queue"
    durable: bool  # answers 250 only after the message is on disk
    multi_process: bool  # a process per connection: its memory is not one process's RSS

    def start(self, rundir: Path) -> Instance: ...

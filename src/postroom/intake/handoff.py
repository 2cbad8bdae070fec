"""Handing committed mail straight to delivery (the seam; ``delivery.direct`` fills it).

Intake only asks and tells. Before the commit, ``Handoff.plan`` names the recipients it
will deliver at once (mail whose whole body is in memory); they are stored
already claimed, under a lease, in the same commit. After the commit (the message is
durable, the 250 is due), ``Planned.start`` begins their delivery. Should the process
die in between, the lease ends unsettled and the scheduler takes them, as it takes any
claim a crashed process left: nothing is lost, and while the lease holds the scheduler
never delivers them too. A commit that fails starts nothing.
"""

from __future__ import annotations

from typing import Protocol

from postroom.store.models import NewMessage

__all__ = ["Handoff", "Planned"]


class Planned(Protocol):
    """Recipients of one message that the handoff will deliver once it is durable."""

    @property
    def addresses(self) -> frozenset[str]: ...

    @property
    def lease_until(self) -> float: ...

    def start(self) -> None:
        """The commit is durable: deliver (in the background; never raises)."""
        ...


class Handoff(Protocol):
    @property
    def local_only(self) -> bool:
        """Whether it delivers to local users alone: mail for no local user is not
        offered to it (nor its bytes joined for it)."""
        ...

    def plan(
        self, message: NewMessage, data: bytes, local_domains: frozenset[str]
    ) -> Planned | None:
        """Which recipients of ``message`` (whose stored bytes are ``data``) to deliver
        at once; None: none, the scheduler delivers all. ``local_domains``: the domains
        among the recipients' that RCPT found local (A-labels, lowercase)."""
        ...

"""The ``mx`` mailer: straight to each recipient domain's mail hosts (RFC 5321 5).

Recipients are grouped by domain, one transaction per domain (in parallel). For each:

1. MX lookup. NXDOMAIN bounces (5.1.2); a DNS failure defers (4.4.3); a null MX bounces
   at once (RFC 7505 3.2: 556 5.1.10); no MX records means the domain is its own host
   (RFC 5321 5.1). An address literal (``user@[192.0.2.1]``) is its own host too.
2. The hosts in preference order (the resolver shuffles equal preferences), each host's
   addresses IPv4 first, in random order within a family (Postfix
   smtp_randomize_addresses), at most ``max_addresses`` in all.
3. ``transaction`` judges each try. Recipients it lists in ``retry`` (connection trouble,
   a 4xx before DATA's end, a refused greeting) go to the next address; the others are
   settled. When the addresses run out, the last host's deferral stands (failover set).

Domains in ``require_tls`` are sent only over STARTTLS with a verified certificate for
the MX host name; a host without it is skipped (4.7.5) and nothing goes in the clear.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Sequence

from postroom.clock import Clock
from postroom.config.mailers import MxMailerSettings
from postroom.delivery.mailers.mta.transaction import (
    Peer,
    TlsMode,
    pooled_client,
)
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Disposition, Outcome, RemoteInfo
from postroom.delivery.slots import SharedSlots
from postroom.errors import AddressError
from postroom.mail.address import to_ascii_domain
from postroom.resolver import LookupFailed, MxHost, MxResult, Resolver
from postroom.smtp.replies import Reply

__all__ = ["MxMailer"]


class MxMailer:
    def __init__(
        self,
        settings: MxMailerSettings,
        *,
        resolver: Resolver,
        hostname: str,
        clock: Clock,
        rng: random.Random,
        slots: SharedSlots | None = None,
    ) -> None:
        self.name = settings.name
        self._settings, self._resolver, self._clock, self._rng = settings, resolver, clock, rng
        self._require_tls = frozenset(to_ascii_domain(d) for d in settings.require_tls)
        self.pool, self._client = pooled_client(
            settings,
            hostname=hostname,
            clock=clock,
            max_per_destination=settings.max_per_destination,
            slots=slots,
        )

    async def deliver(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> list[Outcome]:
        groups: dict[str, list[OutboundRecipient]] = {}
        outcomes: dict[str, Outcome] = {}
        for recipient in recipients:
            try:
                domain = to_ascii_domain(recipient.address.rpartition("@")[2])
            except AddressError:
                domain = ""
            if not domain:
                reply = Reply(550, "5.1.2", f"Bad destination domain in {recipient.address}")
                outcomes[recipient.address] = self._outcome(recipient, reply, 0.0)
                continue
            groups.setdefault(domain, []).append(recipient)
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(self._deliver_domain(domain, message, members))
                for domain, members in groups.items()
            ]
        outcomes.update((o.recipient, o) for task in tasks for o in task.result())
        return [outcomes[r.address] for r in recipients]

    async def aclose(self) -> None:
        await self.pool.aclose()

    # -- one domain ----------------------------------------------------------------------
    async def _deliver_domain(
        self, domain: str, message: OutboundMessage, recipients: list[OutboundRecipient]
    ) -> list[Outcome]:
        started = self._clock.monotonic()
        async with self.pool.limit(domain):
            try:
                mx = await self._lookup(domain)
            except LookupFailed as exc:
                return self._all(recipients, _lookup_reply(domain, exc), started)
            if mx.null:
                text = f"Domain {domain} does not accept mail (null MX)"
                return self._all(recipients, Reply(556, "5.1.10", text), started)
            return await self._walk(domain, mx.hosts, message, recipients, started)

    async def _lookup(self, domain: str) -> MxResult:
        if domain.startswith("[") and domain.endswith("]"):
            literal = domain[1:-1].removeprefix("IPv6:").removeprefix("ipv6:")
            return MxResult(domain, (MxHost(0, literal),), implicit=True)
        return await self._resolver.mx(domain)

    async def _walk(
        self,
        domain: str,
        hosts: Sequence[MxHost],
        message: OutboundMessage,
        recipients: list[OutboundRecipient],
        started: float,
    ) -> list[Outcome]:
        settled: dict[str, Outcome] = {}
        pending = recipients
        trouble: LookupFailed | None = None
        budget = self._settings.max_addresses
        for host in hosts:
            try:
                addresses = await self._resolver.addresses(host.host, self._settings.ipv6)
            except LookupFailed as exc:
                trouble = exc if trouble is None or exc.temporary else trouble
                continue
            for address in self._order(addresses)[:budget]:
                budget -= 1
                transaction = await self._client.deliver(
                    self._peer(domain, host.host, address), message, pending, domain
                )
                settled.update((o.recipient, o) for o in transaction.outcomes)
                pending = [r for r in pending if r.address in transaction.retry]
                if not pending or budget == 0:
                    return [settled[r.address] for r in recipients]
        if pending and not any(r.address in settled for r in pending):
            reply = _no_address_reply(domain, trouble)
            settled.update((o.recipient, o) for o in self._all(pending, reply, started))
        return [settled[r.address] for r in recipients]

    def _peer(self, domain: str, host: str, address: str) -> Peer:
        if domain in self._require_tls:
            tls, ca_file = TlsMode.STARTTLS, self._settings.ca_file
            return Peer(host, address, self._settings.port, tls, verify=True, ca_file=ca_file)
        return Peer(host, address, self._settings.port, TlsMode.OPPORTUNISTIC)

    def _order(self, addresses: list[str]) -> list[str]:
        """IPv4 first, each family shuffled (spreads load over a host's addresses)."""
        families: tuple[list[str], list[str]] = ([], [])
        for address in addresses:
            families[ipaddress.ip_address(address).version == 6].append(address)
        for family in families:
            self._rng.shuffle(family)
        return families[0] + families[1]

    def _all(
        self, recipients: Sequence[OutboundRecipient], reply: Reply, started: float
    ) -> list[Outcome]:
        duration = self._clock.monotonic() - started
        return [self._outcome(r, reply, duration) for r in recipients]

    def _outcome(self, recipient: OutboundRecipient, reply: Reply, duration: float) -> Outcome:
        bounced = reply.is_permanent
        disposition = Disposition.BOUNCED if bounced else Disposition.DEFERRED
        remote = RemoteInfo(self.name)
        return Outcome(recipient.address, disposition, reply, remote, not bounced, duration)


def _lookup_reply(domain: str, exc: LookupFailed) -> Reply:
    if exc.temporary:
        return Reply(451, "4.4.3", f"DNS lookup for {domain} failed: {exc.detail}")
    return Reply(550, "5.1.2", f"Host or domain name not found: {domain} ({exc.detail})")


def _no_address_reply(domain: str, trouble: LookupFailed | None) -> Reply:
    """No address to try: a temporary lookup failure defers; otherwise the domain's
    hosts have no A/AAAA records, which Postfix also bounces (5.4.4)."""
    if trouble is not None and trouble.temporary:
        return Reply(451, "4.4.3", f"DNS lookup of mail hosts for {domain} failed: {trouble}")
    return Reply(550, "5.4.4", f"No address found for the mail hosts of {domain}")

"""Principals and their sender rights, made from the directory's rows and the settings.

The one place that says what each kind of principal may use by default (documented in
docs/configuration.md, "Who may send as whom"):

- an SMTP AUTH user: its own address's domain, plus its ``--sender-domain``s;
- an API key: the local domains, plus its ``--sender-domain``s;
- a local Unix user (postroom-sendmail, `postroom send`): the local domains and the
  server's hostname, plus ``[senders.sendmail]``;
- a client in ``relay_networks``: the local domains, plus ``[senders.relay_networks]``;
- postroom itself (DSNs): any domain;
- a dashboard admin (a test email, a resend): any domain, as the operator it is.

``any_sender`` (per user or key, or in the settings) allows any domain.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from postroom.config.settings import SenderSettings, Settings
from postroom.errors import AddressError
from postroom.intake.policy import ANY_SENDER, Principal, PrincipalKind, SenderRights
from postroom.mail.address import to_ascii_domain
from postroom.store.models import ApiKeyRecord, UserRecord

__all__ = [
    "POSTROOM",
    "RelayNetworks",
    "admin_principal",
    "api_key_principal",
    "api_key_rights",
    "local_principal",
    "user_principal",
    "user_rights",
]

POSTROOM = Principal("MAILER-DAEMON", ANY_SENDER, PrincipalKind.POSTROOM)


def user_rights(record: UserRecord) -> SenderRights:
    if record.any_sender:
        return ANY_SENDER
    own = record.address.rpartition("@")[2]
    return SenderRights(frozenset((own, *record.sender_domains)))


def user_principal(record: UserRecord) -> Principal:
    return Principal(record.address, user_rights(record), PrincipalKind.USER)


def api_key_rights(record: ApiKeyRecord) -> SenderRights:
    if record.any_sender:
        return ANY_SENDER
    return SenderRights(frozenset(record.sender_domains), local_domains=True)


def api_key_principal(record: ApiKeyRecord) -> Principal:
    return Principal(record.name, api_key_rights(record), PrincipalKind.API_KEY)


def admin_principal(name: str) -> Principal:
    """An admin of the dashboard sending a test email or resending a message."""
    return Principal(name, ANY_SENDER, PrincipalKind.LOCAL)


def _configured(senders: SenderSettings, *also: str) -> SenderRights:
    if senders.any_sender:
        return ANY_SENDER
    return SenderRights(frozenset((*senders.sender_domains, *also)), local_domains=True)


def local_principal(user: str, settings: Settings) -> Principal:
    """A Unix user submitting through postroom-sendmail or `postroom send`. The hostname
    is allowed too: sendmail's default sender is ``<user>@<hostname>``."""
    try:
        hostname = [to_ascii_domain(settings.hostname.rstrip("."))]
    except AddressError:
        hostname = []
    rights = _configured(settings.senders.sendmail, *hostname)
    return Principal(user, rights, PrincipalKind.LOCAL)


class RelayNetworks:
    """``relay_networks``: a client address in one of them is that network's principal."""

    def __init__(self, networks: Sequence[str], senders: SenderSettings) -> None:
        self._networks = [ipaddress.ip_network(n) for n in networks]
        self._rights = _configured(senders)

    @classmethod
    def from_settings(cls, settings: Settings) -> RelayNetworks:
        return cls(settings.relay_networks, settings.senders.relay_networks)

    def principal(self, client_ip: str | None) -> Principal | None:
        if client_ip is None or not self._networks:
            return None
        try:
            address = ipaddress.ip_address(client_ip.partition("%")[0])  # no IPv6 zone
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 client
        for network in self._networks:
            if address in network:
                return Principal(str(network), self._rights, PrincipalKind.NETWORK)
        return None

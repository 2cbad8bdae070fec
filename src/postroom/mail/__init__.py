"""Pure value types shared by every layer: addresses, envelopes, headers, spooled bodies.

Imports nothing else from postroom but ``errors``.
"""

from postroom.mail.address import Address, parse_address, parse_domain
from postroom.mail.envelope import DsnRequest, Envelope, Notify, Recipient, Ret, Source, SourceKind

__all__ = [
    "Address",
    "DsnRequest",
    "Envelope",
    "Notify",
    "Recipient",
    "Ret",
    "Source",
    "SourceKind",
    "parse_address",
    "parse_domain",
]

"""The exception tree.

PostroomError
├── ConfigError          a configuration key is wrong: key + problem, one CLI line, exit 2
├── AddressError         an address does not parse (RFC 5321 4.1.2)
├── DirectoryError       a user, domain or API key change was refused: one CLI line, exit 1
│   ├── ApiKeyExists     an API key with that name exists
│   ├── DomainExists     the domain is already local
│   ├── InvalidAddress   a user address does not parse
│   ├── InvalidDomain    a domain name does not parse, or is an address literal
│   ├── InvalidPassword  empty, or holds a NUL (which SASL PLAIN cannot carry)
│   ├── UnknownApiKey    no API key with that name
│   ├── UnknownDomain    no such local domain
│   ├── UnknownSuppression  the address is not on the suppression list (in that scope)
│   ├── UnknownUser      no such user
│   └── UserExists       a user with that address exists
└── StoreError           the store could not do what was asked
    ├── StoreFull        out of space: the client gets 452 4.3.1
    └── StoreUnavailable locked or broken: the client gets 451 4.3.0
        └── StoreDamaged SQLite found the database file damaged (SQLITE_CORRUPT)
"""

from __future__ import annotations

__all__ = [
    "AddressError",
    "ApiKeyExists",
    "ConfigError",
    "DirectoryError",
    "DomainExists",
    "InvalidAddress",
    "InvalidDomain",
    "InvalidPassword",
    "PostroomError",
    "StoreDamaged",
    "StoreError",
    "StoreFull",
    "StoreUnavailable",
    "UnknownApiKey",
    "UnknownDomain",
    "UnknownSuppression",
    "UnknownUser",
    "UserExists",
]


class PostroomError(Exception):
    pass


class ConfigError(PostroomError):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class AddressError(PostroomError, ValueError):
    pass


class StoreError(PostroomError):
    pass


class NoStore(StoreError):
    """A command that needs an existing store found none where the settings point (and
    made none)."""

    def __init__(self, where: str) -> None:
        super().__init__(f"no store at {where}")
        self.where = where


class StoreFull(StoreError):
    pass


class StoreUnavailable(StoreError):
    pass


class StoreDamaged(StoreUnavailable):
    pass


class DirectoryError(PostroomError):
    pass


class DomainExists(DirectoryError):
    pass


class InvalidAddress(DirectoryError):
    pass


class InvalidDomain(DirectoryError):
    pass


class InvalidPassword(DirectoryError):
    pass


class UnknownDomain(DirectoryError):
    pass


class UnknownSuppression(DirectoryError):
    pass


class UnknownUser(DirectoryError):
    pass


class UserExists(DirectoryError):
    pass


class ApiKeyExists(DirectoryError):
    pass


class UnknownApiKey(DirectoryError):
    pass

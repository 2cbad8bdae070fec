"""The directory: who exists and what they may do.

``Users`` (login, passwords, allowed sender domains), ``Domains`` (the local
domains) and ``ApiKeys`` (HTTP API keys, hashed, with sender domains), ``Admins`` (the
dashboard's own logins) over the
``Store``; argon2id password hashing in ``passwords``, with async variants that run
in a worker thread. Addresses and domains are normalised here
(A-labels, lowercased) before they reach the store, and every refused change raises a
``DirectoryError`` whose message is one line for the CLI.
"""

from postroom.directory.admins import Admins
from postroom.directory.apikeys import ApiKeys
from postroom.directory.domains import Domains, normalize_domain, unicode_domain
from postroom.directory.passwords import (
    hash_password,
    hash_password_async,
    needs_rehash,
    verify_password,
    verify_password_async,
)
from postroom.directory.users import Users, new_user_key, user_key

__all__ = [
    "Admins",
    "ApiKeys",
    "Domains",
    "Users",
    "hash_password",
    "hash_password_async",
    "needs_rehash",
    "new_user_key",
    "normalize_domain",
    "unicode_domain",
    "user_key",
    "verify_password",
    "verify_password_async",
]

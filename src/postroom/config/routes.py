"""``[[routes]]``: which mailer chain a recipient's mail takes.

A route is a condition group plus a ``name`` and an ordered chain of ``mailers``
(primary first, then backups). A group matches when

* its ``conditions`` match as ``match`` says (``"all"``: every one, ``"any"``: at least
  one; an empty list does not count against the group), and
* every group in ``all_of`` matches, and
* at least one group in ``any_of`` matches (when ``any_of`` is not empty).

``all_of`` and ``any_of`` hold groups of the same shape, nested as deep as needed::

    [[routes]]
    name = "billing"
    mailers = ["relay", "backup-relay"]
    conditions = [{ field = "sender_domain", value = "billing.example.com" }]
    any_of = [
      { conditions = [{ field = "header", header = "X-Stream", value = "invoices" }] },
      { match = "any", conditions = [
          { field = "subject", operator = "starts_with", value = "Invoice" },
          { field = "subject", operator = "starts_with", value = "Receipt" },
      ] },
    ]

A route with no conditions at all matches everything (a catch-all). Routes are tried in
file order; the first that matches wins. The checks that involve other settings (mailer
names) live in ``settings.py``; this module checks what a route can check on its own.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ADDRESS_FIELDS",
    "DEFAULT_LOCAL",
    "DEFAULT_REMOTE",
    "ConditionField",
    "ConditionGroup",
    "ConditionSettings",
    "Match",
    "Operator",
    "RouteSettings",
    "SettingError",
]

# The routes taken when no configured route matches: local domains, everything else.
DEFAULT_LOCAL = "default-local"
DEFAULT_REMOTE = "default-remote"

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# RFC 5322 2.2: a field name is printable US-ASCII except ":".
_HEADER_NAME = re.compile(r"[!-9;-~]+")


class SettingError(ValueError):
    """A problem found by a validator, with the path below the validated object
    (``("mailers", 1)``), so the configuration error names the exact key."""

    def __init__(self, loc: tuple[int | str, ...], problem: str) -> None:
        super().__init__(problem)
        self.loc = loc


class ConditionField(StrEnum):
    RECIPIENT = "recipient"  # the recipient address
    RECIPIENT_DOMAIN = "recipient_domain"  # its domain, in A-labels (xn--...)
    SENDER = "sender"  # the envelope sender ("" for <>)
    SENDER_DOMAIN = "sender_domain"
    SUBJECT = "subject"  # the Subject header, RFC 2047 decoded
    HEADER = "header"  # any header, named by ``header``
    BODY = "body"  # the text parts of the body, decoded
    SOURCE = "source"  # the AUTH user or API key that submitted the message


class Operator(StrEnum):
    EQUALS = "equals"
    CONTAINS = "contains"
    STARTS_WITH = "starts_with"
    ENDS_WITH = "ends_with"
    REGEX = "regex"  # Python re syntax, searched anywhere in the value (anchor with ^ $)


class Match(StrEnum):
    ALL = "all"
    ANY = "any"


# Compared without regard to case unless ``case_sensitive = true``.
ADDRESS_FIELDS = frozenset(
    {
        ConditionField.RECIPIENT,
        ConditionField.RECIPIENT_DOMAIN,
        ConditionField.SENDER,
        ConditionField.SENDER_DOMAIN,
        ConditionField.SOURCE,
    }
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ConditionSettings(_Model):
    field: ConditionField
    operator: Operator = Operator.EQUALS
    value: str
    header: str | None = None  # the header's name, for field = "header" only
    negate: bool = False  # true: the condition holds when the test does not
    # None: case-insensitive for addresses, domains and source; exact for the rest.
    case_sensitive: bool | None = None

    @property
    def ignore_case(self) -> bool:
        if self.case_sensitive is None:
            return self.field in ADDRESS_FIELDS
        return not self.case_sensitive

    def regex(self) -> re.Pattern[str]:
        """The compiled ``value`` of a regex condition (re caches compiled patterns)."""
        return re.compile(self.value, re.IGNORECASE if self.ignore_case else 0)

    @model_validator(mode="after")
    def _check(self) -> ConditionSettings:
        if self.field is ConditionField.HEADER:
            if self.header is None:
                raise SettingError(("header",), 'is required when field = "header"')
            if not _HEADER_NAME.fullmatch(self.header):
                raise SettingError(("header",), f"{self.header!r} is not a header name")
        elif self.header is not None:
            raise SettingError(("header",), 'is only for field = "header"')
        if self.operator is Operator.REGEX:
            try:
                self.regex()
            except re.error as exc:
                raise SettingError(("value",), f"not a valid regular expression: {exc}") from None
        return self


class ConditionGroup(_Model):
    match: Match = Match.ALL  # how ``conditions`` combine
    conditions: tuple[ConditionSettings, ...] = ()
    all_of: tuple[ConditionGroup, ...] = ()  # every one of these groups must match
    any_of: tuple[ConditionGroup, ...] = ()  # at least one of these groups must match


class RouteSettings(ConditionGroup):
    name: Annotated[str, Field(pattern=_NAME)]
    # The chain: the first mailer, then the ones tried when it fails over, in order.
    mailers: Annotated[tuple[str, ...], Field(min_length=1)]
    # VERP return paths for mail on this route; None: as [bounces] verp says.
    verp: bool | None = None
    # Open and click tracking for mail on this route (decided by intake, before DKIM
    # signs); [] says none; None: as [tracking] default says.
    track: tuple[Literal["opens", "clicks"], ...] | None = None

    @model_validator(mode="after")
    def _check_route(self) -> RouteSettings:
        if self.name in (DEFAULT_LOCAL, DEFAULT_REMOTE):
            raise SettingError(("name",), f"{self.name!r} is the name of a built-in route")
        for index, name in enumerate(self.mailers):
            if name in self.mailers[:index]:
                raise SettingError(("mailers", index), f"{name!r} is already in the chain")
        return self

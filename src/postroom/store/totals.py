"""The summary report's counts, the same on every engine: each engine gives its own
expression for the recipient's domain and its parameter mark, and reads the rows back
through ``totals``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from postroom.store.models import AttemptTally, AttemptTotals, FailureReason

__all__ = ["counts_sql", "reasons_sql", "totals"]


def counts_sql(domain: str, mark: str) -> str:
    """``domain``: the SQL expression of the recipient's domain; ``mark``: ``?`` or ``%s``."""
    return (
        f"SELECT mailer, lower({domain}) AS domain, disposition, COUNT(*) FROM attempts"
        f" WHERE at >= {mark} AND at < {mark}"
        " GROUP BY mailer, lower({domain}), disposition"
        " ORDER BY mailer, domain, disposition"
    ).replace("{domain}", domain)


def reasons_sql(mark: str) -> str:
    return (
        "SELECT code, enhanced, COUNT(*), MIN(text) FROM attempts"
        f" WHERE disposition != 'delivered' AND at >= {mark} AND at < {mark}"
        f" GROUP BY code, enhanced ORDER BY COUNT(*) DESC, code, enhanced LIMIT {mark}"
    )


def totals(counts: Iterable[Any], reasons: Iterable[Any]) -> AttemptTotals:
    return AttemptTotals(
        counts=tuple(AttemptTally(m, d or "", disp, int(n)) for m, d, disp, n in counts),
        reasons=tuple(
            FailureReason(code, enhanced, int(n), text or "") for code, enhanced, n, text in reasons
        ),
    )

"""SPF (RFC 7208): pyspf's evaluator, its DNS lookups answered by postroom's Resolver.

pyspf evaluates synchronously and looks names up as it goes, through one overridable
method (``query.dns``). The evaluation runs in a worker thread; each lookup hops back
to the event loop, so every query goes through the one configured Resolver (no global
resolver state, the test DNS server is reachable). pyspf keeps the RFC 7208 4.6.4
limits: 10 lookups that cost DNS, 2 void lookups.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass
from typing import Any

import spf

from postroom.resolver import Resolver, TemporaryLookupFailure

__all__ = ["SpfResult", "check_spf"]

_TYPES = ("A", "AAAA", "MX", "PTR", "TXT")
_LOOP_WAIT = 120.0  # seconds


@dataclass(frozen=True, slots=True)
class SpfResult:
    result: str  # pass | fail | softfail | neutral | none | temperror | permerror
    identity: str  # "mailfrom" or "helo"
    domain: str  # the domain checked
    explanation: str = ""


class _Query(spf.query):  # type: ignore[misc]  # pyspf is untyped
    """pyspf's query whose DNS comes from a Resolver on an event loop in another thread."""

    def __init__(
        self, resolver: Resolver, loop: asyncio.AbstractEventLoop, now: float, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._resolver = resolver
        self._loop = loop
        self.t = str(int(now))  # the %{t} macro, from our clock

    def dns(
        self, name: str, qtype: str, cnames: object = None, ignore_void: bool = False
    ) -> list[Any]:
        name = str(name).rstrip(".").lower()
        if not name or not all(0 < len(label) < 64 for label in name.split(".")):
            return []  # not a valid DNS name: no answer (as pyspf does)
        cached: list[Any] = self.cache.get((name, qtype), [])
        if cached:
            return cached
        result = self._lookup(name, qtype) if qtype in _TYPES else []
        if result:
            self.cache[(name, qtype)] = result
        elif not ignore_void:
            # RFC 7208 4.6.4: more than two lookups answering nothing is a permerror.
            self.void_lookups += 1
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return result

    def _lookup(self, name: str, qtype: str) -> list[Any]:
        future = asyncio.run_coroutine_threadsafe(self._ask(name, qtype), self._loop)
        try:
            # The resolver times out on its own; this bound only frees the thread if the
            # loop stops meanwhile (shutdown).
            return future.result(timeout=_LOOP_WAIT)
        except TemporaryLookupFailure as exc:
            raise spf.TempError(f"DNS {exc.detail}") from None
        except (TimeoutError, concurrent.futures.CancelledError):
            future.cancel()
            raise spf.TempError(f"DNS {qtype} lookup of {name} did not finish") from None

    async def _ask(self, name: str, qtype: str) -> list[Any]:
        if qtype == "TXT":
            # pyspf wants each record as its list of strings; joined is equivalent (3.3).
            return [[record] for record in await self._resolver.txt(name)]
        records = await self._resolver.records(name, qtype)
        if qtype == "MX":
            pairs = (r.partition(" ") for r in records)
            return [(int(pref), host.strip()) for pref, _, host in pairs]
        return records


def _evaluate(query: _Query) -> tuple[str, str]:
    result, _code, explanation = query.check()
    return str(result), str(explanation)


async def check_spf(
    resolver: Resolver,
    *,
    ip: str,
    sender: str,
    helo: str,
    now: float,
    receiver: str = "unknown",
    executor: concurrent.futures.Executor | None = None,
) -> SpfResult:
    """The SPF result for MAIL FROM ``sender`` (the HELO identity when ``sender`` is
    empty, RFC 7208 2.4) from client ``ip``. ``executor`` runs the evaluation (its thread
    waits for the lookups); None: the loop's default one."""
    loop = asyncio.get_running_loop()
    query = _Query(resolver, loop, now, i=ip, s=sender, h=helo, receiver=receiver)
    result, explanation = await loop.run_in_executor(executor, _evaluate, query)
    domain = query.o if query.ident == "mailfrom" else helo
    return SpfResult(result, query.ident, str(domain or ""), explanation)

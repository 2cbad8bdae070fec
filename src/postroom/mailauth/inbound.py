"""The checks on mail arriving at the mx listener from unauthenticated clients: SPF on
MAIL FROM (or HELO), every DKIM signature, DMARC over both; one Authentication-Results.

``InboundChecker.check`` gives the header to prepend, and a refusal when the policy
asks for one: DMARC ``p=reject`` failing (``dmarc_reject``) or a temporary DNS failure
(``temperror_defer``). Forged copies of our Authentication-Results were removed by
intake's clean-up before, which also leaves every header block parseable; one that is
not anyway is unverifiable mail (RFC 8601 2.7.1): ``dkim=permerror`` with the reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import authres
import authres.dmarc
import dkim

from postroom.config.settings import InboundAuthSettings
from postroom.mail.authors import read_authors
from postroom.mailauth.dmarc import DmarcPolicy, DmarcResult, evaluate, find_policy
from postroom.mailauth.results import authentication_results
from postroom.mailauth.spf import SpfResult, check_spf
from postroom.resolver import Resolver, TemporaryLookupFailure
from postroom.smtp.replies import Reply

__all__ = ["VERIFY_LIMIT", "DkimResult", "InboundChecker", "InboundVerdict"]

DMARC_REJECTED = Reply(550, "5.7.1", ("Message rejected by the sender domain's DMARC policy",))
TEMPERROR = Reply(451, "4.7.5", ("Sender authentication could not be checked, try again later",))
_OFF_LOOP = 256 * 1024  # verify bigger messages in a worker thread (hashing the body)
# dkimpy hashes a message held whole: bigger ones are not verified (dkim=policy), and
# only a few are held at once, so memory stays bounded however many arrive together.
VERIFY_LIMIT = 10 * 1024 * 1024
_VERIFYING = 4
_SPF_THREADS = 16
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}$"
)


@dataclass(frozen=True, slots=True)
class DkimResult:
    result: str  # pass | fail | policy (too big to verify) | temperror | permerror
    domain: str
    selector: str
    algorithm: str
    reason: str = ""  # why it could not be verified, for the header's reason=


@dataclass(frozen=True, slots=True)
class InboundVerdict:
    header: bytes  # the Authentication-Results field, CRLF-terminated
    refusal: Reply | None
    spf: SpfResult
    helo_spf: SpfResult | None  # the HELO identity's, when MAIL FROM gave another
    dkim: tuple[DkimResult, ...]
    dmarc: DmarcResult | None


class InboundChecker:
    def __init__(self, settings: InboundAuthSettings, resolver: Resolver, authserv_id: str) -> None:
        self.settings = settings
        self._resolver = resolver
        self._authserv_id = authserv_id
        self._verifying = asyncio.Semaphore(_VERIFYING)
        # SPF evaluations wait for DNS in threads of their own: a slow resolver must not
        # hold the threads other work (Maildir delivery) runs in.
        self._spf_threads = ThreadPoolExecutor(_SPF_THREADS, thread_name_prefix="postroom-spf")

    def close(self) -> None:
        self._spf_threads.shutdown(wait=False, cancel_futures=True)

    async def check(
        self,
        head: bytes,
        *,
        size: int,
        load: Callable[[], bytes],
        ip: str,
        helo: str,
        sender: str,
        now: float,
    ) -> InboundVerdict:
        """``head``: the message's header block (with the empty line after it); ``load``
        gives the whole message, called only to verify DKIM signatures."""
        spf_task = check_spf(
            self._resolver,
            ip=ip,
            sender=sender,
            helo=helo,
            now=now,
            receiver=self._authserv_id,
            executor=self._spf_threads,
        )
        domain = read_authors(head).domain_of("From")  # the same reader as intake's policy
        # The DMARC record is looked up alongside SPF and DKIM; only its verdict waits.
        spf, helo_spf, signatures, policy = await asyncio.gather(
            spf_task,
            self._helo_spf(ip=ip, sender=sender, helo=helo, now=now),
            self._dkim(head, size, load),
            self._policy(domain),
        )
        dmarc = None
        if policy is not None:
            dmarc = evaluate(
                policy,
                spf_result=spf.result,
                spf_domain=spf.domain,
                dkim_passes=[s.domain for s in signatures if s.result == "pass"],
            )
        clauses = _clauses([spf] if helo_spf is None else [spf, helo_spf], signatures, dmarc)
        return InboundVerdict(
            header=authentication_results(self._authserv_id, clauses),
            refusal=self._refusal(spf, signatures, dmarc),
            spf=spf,
            helo_spf=helo_spf,
            dkim=signatures,
            dmarc=dmarc,
        )

    async def _helo_spf(self, *, ip: str, sender: str, helo: str, now: float) -> SpfResult | None:
        """RFC 7208 2.3: the HELO identity is checked too (with MAIL FROM <> it is the
        MAIL FROM check already); an address literal or a bare word has no SPF."""
        if not sender or not _HOSTNAME.match(helo) or _is_address(helo):
            return None  # also keeps a client's odd HELO text out of our header
        return await check_spf(
            self._resolver,
            ip=ip,
            sender="",
            helo=helo,
            now=now,
            receiver=self._authserv_id,
            executor=self._spf_threads,
        )

    async def _policy(self, domain: str | None) -> DmarcPolicy | None:
        return None if domain is None else await find_policy(self._resolver, domain)

    def _refusal(
        self, spf: SpfResult, signatures: tuple[DkimResult, ...], dmarc: DmarcResult | None
    ) -> Reply | None:
        if self.settings.dmarc_reject and dmarc is not None and dmarc.rejects:
            return DMARC_REJECTED
        results = [spf.result, *(s.result for s in signatures), dmarc.result if dmarc else ""]
        if self.settings.temperror_defer and "temperror" in results:
            return TEMPERROR
        return None

    async def _dkim(
        self, head: bytes, size: int, load: Callable[[], bytes]
    ) -> tuple[DkimResult, ...]:
        try:
            verifier = dkim.DKIM(head, timeout=5)
        except (dkim.MessageFormatError, IndexError):  # dkimpy cannot read the header
            return (DkimResult("permerror", "", "", "", "message header cannot be parsed"),)
        count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
        if not count:
            return ()
        if size > VERIFY_LIMIT:
            return tuple(_unverified(verifier, i, "policy") for i in range(count))
        # Fetch every key record first, on the loop, through our resolver; then verify
        # from those answers (dkimpy's dnsfunc hook), off the loop for big messages.
        keys: dict[bytes, bytes | None] = {}
        failed: set[bytes] = set()
        for index in range(count):
            tags = _tags(verifier, index)
            if tags is None:
                continue
            name = tags.get(b"s", b"") + b"._domainkey." + tags.get(b"d", b"") + b"."
            try:
                records = await self._resolver.txt(name.decode("ascii", "replace"))
            except TemporaryLookupFailure:
                failed.add(name)
                continue
            keys[name] = records[0] if records else None

        def verify_all(message: bytes) -> tuple[DkimResult, ...]:
            return tuple(_verify(message, i, keys, failed) for i in range(count))

        async with self._verifying:
            message = load()
            if len(message) > _OFF_LOOP:
                return await asyncio.to_thread(verify_all, message)
            return verify_all(message)


def _tags(verifier: dkim.DKIM, index: int) -> dict[bytes, bytes] | None:
    sigs = [v for n, v in verifier.headers if n.lower() == b"dkim-signature"]
    try:
        return dict(dkim.util.parse_tag_value(sigs[index]))
    except Exception:  # a malformed signature: dkimpy reports it as permerror later
        return None


def _unverified(verifier: dkim.DKIM, index: int, result: str) -> DkimResult:
    tags = _tags(verifier, index) or {}
    return DkimResult(
        result,
        tags.get(b"d", b"").decode("ascii", "replace"),
        tags.get(b"s", b"").decode("ascii", "replace"),
        tags.get(b"a", b"").decode("ascii", "replace"),
    )


def _verify(
    message: bytes, index: int, keys: dict[bytes, bytes | None], failed: set[bytes]
) -> DkimResult:
    verifier = dkim.DKIM(message, timeout=5)
    tags = _tags(verifier, index) or {}
    domain = tags.get(b"d", b"").decode("ascii", "replace")
    selector = tags.get(b"s", b"").decode("ascii", "replace")
    algorithm = tags.get(b"a", b"").decode("ascii", "replace")
    name = tags.get(b"s", b"") + b"._domainkey." + tags.get(b"d", b"") + b"."
    if name in failed:
        return DkimResult("temperror", domain, selector, algorithm)
    if keys.get(name) is None:  # no key record: RFC 6376 6.1.2 PERMFAIL
        return DkimResult("permerror", domain, selector, algorithm)
    try:
        ok = verifier.verify(idx=index, dnsfunc=lambda name, timeout=5: keys.get(name))
    except dkim.ValidationError:  # the body hash or a tag does not check out
        ok = False
    except dkim.DKIMException:
        # RFC 8601 2.7.1: a signature that cannot be checked (no key, bad syntax).
        return DkimResult("permerror", domain, selector, algorithm)
    return DkimResult("pass" if ok else "fail", domain, selector, algorithm)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _clauses(
    spfs: list[SpfResult], signatures: tuple[DkimResult, ...], dmarc: DmarcResult | None
) -> list[authres.core.AuthenticationResult]:
    clauses: list[authres.core.AuthenticationResult] = []
    for spf in spfs:
        if spf.identity == "mailfrom":
            clause = authres.SPFAuthenticationResult(result=spf.result, smtp_mailfrom=spf.domain)
        else:
            clause = authres.SPFAuthenticationResult(result=spf.result, smtp_helo=spf.domain)
        clauses.append(clause)
    for sig in signatures:
        clauses.append(
            authres.DKIMAuthenticationResult(
                result=sig.result,
                header_d=sig.domain or None,
                header_s=sig.selector or None,
                header_a=sig.algorithm or None,
                reason=sig.reason or None,
            )
        )
    if dmarc is not None:
        clauses.append(
            authres.dmarc.DMARCAuthenticationResult(
                result=dmarc.result,
                header_from=dmarc.domain,
                policy=dmarc.policy if dmarc.result in ("pass", "fail") else None,
            )
        )
    return clauses

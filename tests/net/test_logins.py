"""The login gate: known logins skip the check but not the throttle, identical attempts in
flight share one check and one slot, guesses still count, a lost store is answered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from postroom.errors import StoreUnavailable
from postroom.net.logins import Login, LoginGate
from postroom.net.throttle import FailureThrottle
from postroom.store.sqlite.limits import LocalLimits
from tests.conftest import FakeClock

PASSWORD = "right horse"
CLIENT = "192.0.2.7"


@dataclass
class Accounts:
    """A directory of one user whose password check takes until ``release`` is set, and
    a login cache the test fills by hand; counts the checks."""

    checks: int = 0
    known: set[tuple[str, str]] = field(default_factory=set)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    fail_with: Exception | None = None

    async def verify(self, username: str, password: str) -> str | None:
        self.checks += 1
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return username if (username, password) == ("ann", PASSWORD) else None

    async def recall(self, username: str, password: str) -> str | None:
        return username if (username, password) in self.known else None


@pytest.fixture
async def counts() -> AsyncIterator[LocalLimits]:
    limits = LocalLimits(None)
    yield limits
    await limits.aclose()


@pytest.fixture
def accounts() -> Accounts:
    return Accounts()


def gate(counts: LocalLimits, accounts: Accounts, *, max_failures: int = 3) -> LoginGate[str]:
    throttle = FailureThrottle(
        counts, FakeClock(), max_failures=max_failures, max_account_failures=10, window=60
    )
    return LoginGate(throttle, verify=accounts.verify, recall=accounts.recall)


async def login(logins: LoginGate[str], password: str, client: str = CLIENT) -> Login[str]:
    return await logins.login(client, "ann", "ann", password)


async def test_a_pool_logging_in_at_once_costs_one_check_and_no_refusal(
    counts: LocalLimits, accounts: Accounts
) -> None:
    logins = gate(counts, accounts, max_failures=3)
    pool = [asyncio.create_task(login(logins, PASSWORD)) for _ in range(20)]
    await asyncio.sleep(0.01)
    accounts.release.set()
    results = await asyncio.gather(*pool)
    assert {r.verdict for r in results} == {"ok"}
    assert accounts.checks == 1


async def test_a_known_login_skips_the_check(counts: LocalLimits, accounts: Accounts) -> None:
    accounts.release.set()
    accounts.known.add(("ann", PASSWORD))
    logins = gate(counts, accounts)
    for _ in range(10):
        assert (await login(logins, PASSWORD)).verdict == "ok"
    assert accounts.checks == 0


async def test_a_throttled_client_is_refused_even_with_a_known_password(
    counts: LocalLimits, accounts: Accounts
) -> None:
    accounts.release.set()
    logins = gate(counts, accounts, max_failures=3)
    for guess in ("a", "b", "c"):
        assert (await login(logins, guess)).verdict == "failed"
    accounts.known.add(("ann", PASSWORD))
    # The cache must not become an oracle: the same answer as for any password.
    assert (await login(logins, PASSWORD)).verdict == "throttled"
    assert (await login(logins, "d")).verdict == "throttled"
    assert accounts.checks == 3
    # Another client is not throttled, and the known login needs no check.
    assert (await login(logins, PASSWORD, client="198.51.100.1")).verdict == "ok"
    assert accounts.checks == 3


async def test_identical_wrong_guesses_in_flight_are_one_guess_and_others_count(
    counts: LocalLimits, accounts: Accounts
) -> None:
    logins = gate(counts, accounts, max_failures=3)
    same = [asyncio.create_task(login(logins, "wrong")) for _ in range(10)]
    await asyncio.sleep(0.01)
    accounts.release.set()
    assert {r.verdict for r in await asyncio.gather(*same)} == {"failed"}
    assert accounts.checks == 1
    # Different guesses each take a slot: two more fit under three failures.
    assert (await login(logins, "other-1")).verdict == "failed"
    assert (await login(logins, "other-2")).verdict == "failed"
    assert (await login(logins, "other-3")).verdict == "throttled"
    assert accounts.checks == 3


async def test_different_guesses_in_parallel_get_no_more_checks_than_the_limit(
    counts: LocalLimits, accounts: Accounts
) -> None:
    logins = gate(counts, accounts, max_failures=3)
    guesses = [asyncio.create_task(login(logins, f"guess-{n}")) for n in range(10)]
    await asyncio.sleep(0.01)
    accounts.release.set()
    verdicts = [r.verdict for r in await asyncio.gather(*guesses)]
    assert verdicts.count("failed") == 3
    assert verdicts.count("throttled") == 7
    assert accounts.checks == 3


async def test_a_foreign_authorization_identity_is_a_failure_without_a_check(
    counts: LocalLimits, accounts: Accounts
) -> None:
    accounts.release.set()
    logins = gate(counts, accounts)
    result = await logins.login(CLIENT, "ann", "ann", PASSWORD, authzid="bob")
    assert result.verdict == "failed"
    assert accounts.checks == 0


async def test_a_store_out_of_reach_is_unavailable_for_everyone_waiting(
    counts: LocalLimits, accounts: Accounts
) -> None:
    accounts.fail_with = StoreUnavailable("the database is away")
    logins = gate(counts, accounts)
    waiting = [asyncio.create_task(login(logins, PASSWORD)) for _ in range(3)]
    await asyncio.sleep(0.01)
    accounts.release.set()
    assert {r.verdict for r in await asyncio.gather(*waiting)} == {"unavailable"}
    assert accounts.checks == 1


async def test_a_cancelled_check_leaves_those_waiting_to_check_for_themselves(
    counts: LocalLimits, accounts: Accounts
) -> None:
    logins = gate(counts, accounts)
    first = asyncio.create_task(login(logins, PASSWORD))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(login(logins, PASSWORD))
    await asyncio.sleep(0.01)
    first.cancel()  # the client hung up mid-check
    await asyncio.sleep(0.01)
    accounts.release.set()
    assert (await second).verdict == "ok"
    assert accounts.checks == 2

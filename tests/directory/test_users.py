"""Users and Domains over a real SQLite store; argon2id passwords."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from postroom.directory import Domains, Users, hash_password, passwords, verify_password
from postroom.errors import (
    DomainExists,
    InvalidAddress,
    InvalidDomain,
    InvalidPassword,
    UnknownDomain,
    UnknownUser,
    UserExists,
)
from postroom.intake.principals import user_rights
from postroom.store import Store, open_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(f"sqlite:///{tmp_path / 'postroom.db'}")
    yield opened
    await opened.aclose()


@pytest.fixture
def users(store: Store) -> Users:
    return Users(store)


@pytest.fixture
def domains(store: Store) -> Domains:
    return Domains(store)


# -- passwords ---------------------------------------------------------------------------


def test_the_hash_is_argon2id_and_not_the_password() -> None:
    hashed = hash_password("correct horse")
    assert hashed.startswith("$argon2id$")
    assert "correct horse" not in hashed
    assert hash_password("correct horse") != hashed  # salted
    assert verify_password(hashed, "correct horse")
    assert not verify_password(hashed, "wrong horse")


def test_a_malformed_hash_verifies_nothing() -> None:
    assert not verify_password("plain-text", "plain-text")
    assert not verify_password("", "")
    assert passwords.needs_rehash("plain-text")


async def test_the_async_variants() -> None:
    hashed = await passwords.hash_password_async("s3cret")
    assert await passwords.verify_password_async(hashed, "s3cret")
    assert not await passwords.verify_password_async(hashed, "S3cret")
    assert not passwords.needs_rehash(hashed)


# -- users ---------------------------------------------------------------------------


async def test_add_stores_the_lookup_key_and_a_hash(users: Users) -> None:
    record = await users.add("App@Bücher.Example", "pw-123")
    assert record.address == "app@xn--bcher-kva.example"
    assert record.password_hash.startswith("$argon2id$")
    assert record.sender_domains == ()
    assert await users.list() == [record]


async def test_verify_ok_bad_and_unknown(users: Users) -> None:
    await users.add("app@example.com", "pw-123")
    record = await users.verify("app@example.com", "pw-123")
    assert record is not None and record.address == "app@example.com"
    assert await users.verify("APP@EXAMPLE.COM", "pw-123") is not None
    assert await users.verify("app@example.com", "pw-124") is None
    assert await users.verify("nobody@example.com", "pw-123") is None
    assert await users.verify("not an address", "pw-123") is None


async def test_an_unknown_user_costs_a_verification_too(
    users: Users, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    real = passwords.verify_password_async

    async def counting(password_hash: str, password: str) -> bool:
        checked.append(password_hash)
        return await real(password_hash, password)

    monkeypatch.setattr(passwords, "verify_password_async", counting)
    assert await users.verify("nobody@example.com", "guess") is None
    assert await users.verify("nobody@example.com", "guess") is None
    assert len(checked) == 2
    assert checked[0].startswith("$argon2id$") and checked[0] == checked[1]


async def test_a_duplicate_user_is_refused(users: Users) -> None:
    await users.add("app@example.com", "pw-123")
    with pytest.raises(UserExists, match=r"user app@example\.com already exists"):
        await users.add("App@EXAMPLE.com", "other")


@pytest.mark.parametrize(
    "address", ["app", "@example.com", "app@", "a b@example.com", "app@-x.com"]
)
async def test_an_invalid_address_is_refused(users: Users, address: str) -> None:
    with pytest.raises(InvalidAddress):
        await users.add(address, "pw-123")


@pytest.mark.parametrize("password", ["", "a\x00b"])
async def test_an_unusable_password_is_refused(users: Users, password: str) -> None:
    with pytest.raises(InvalidPassword):
        await users.add("app@example.com", password)


async def test_passwd_changes_the_password(users: Users) -> None:
    await users.add("app@example.com", "old-pw")
    await users.passwd("app@example.com", "new-pw")
    assert await users.verify("app@example.com", "old-pw") is None
    assert await users.verify("app@example.com", "new-pw") is not None
    with pytest.raises(UnknownUser, match=r"no such user: nobody@example\.com"):
        await users.passwd("nobody@example.com", "x")


async def test_remove(users: Users) -> None:
    await users.add("app@example.com", "pw-123")
    await users.remove("APP@example.com")
    assert await users.list() == []
    assert await users.verify("app@example.com", "pw-123") is None
    with pytest.raises(UnknownUser):
        await users.remove("app@example.com")


async def test_list_is_sorted(users: Users) -> None:
    for address in ("zed@example.com", "amy@example.com", "bob@example.org"):
        await users.add(address, "pw")
    assert [u.address for u in await users.list()] == [
        "amy@example.com",
        "bob@example.org",
        "zed@example.com",
    ]


async def test_a_user_may_send_as_its_own_domain_and_those_it_was_given(users: Users) -> None:
    anyone = await users.add("any@example.com", "pw", any_sender=True)
    own = await users.add("own@example.net", "pw")
    limited = await users.add("app@example.com", "pw", ["Example.COM", "bücher.example"])
    assert limited.sender_domains == ("example.com", "xn--bcher-kva.example")
    assert user_rights(anyone).allows("elsewhere.example")
    assert user_rights(own).allows("example.net")
    assert not user_rights(own).allows("example.com")
    assert user_rights(limited).allows("example.com")
    assert user_rights(limited).allows("xn--bcher-kva.example")
    assert not user_rights(limited).allows("example.org")
    assert not user_rights(limited).allows("sub.example.com")
    assert {u.address: u.any_sender for u in await users.list()} == {
        "any@example.com": True,
        "app@example.com": False,
        "own@example.net": False,
    }


async def test_a_bad_sender_domain_is_refused(users: Users) -> None:
    with pytest.raises(InvalidDomain):
        await users.add("app@example.com", "pw", ["not a domain"])


# -- domains ---------------------------------------------------------------------------


async def test_domains_are_stored_as_a_labels(domains: Domains) -> None:
    assert await domains.add("Bücher.Example") == "xn--bcher-kva.example"
    assert await domains.add("example.com.") == "example.com"
    assert await domains.list() == ["example.com", "xn--bcher-kva.example"]


async def test_is_local_in_any_form(domains: Domains) -> None:
    await domains.add("bücher.example")
    assert await domains.is_local("bücher.example")
    assert await domains.is_local("BÜCHER.example")
    assert await domains.is_local("XN--BCHER-KVA.EXAMPLE")
    assert not await domains.is_local("buecher.example")
    assert not await domains.is_local("not a domain")
    assert not await domains.is_local("[192.0.2.1]")


async def test_a_domain_in_its_other_form_is_a_duplicate(domains: Domains) -> None:
    await domains.add("bücher.example")
    with pytest.raises(DomainExists, match=r"domain xn--bcher-kva\.example already exists"):
        await domains.add("xn--bcher-kva.example")


async def test_remove_a_domain(domains: Domains) -> None:
    await domains.add("example.com")
    assert await domains.remove("EXAMPLE.COM") == "example.com"
    assert await domains.list() == []
    with pytest.raises(UnknownDomain, match=r"no such domain: example\.com"):
        await domains.remove("example.com")


@pytest.mark.parametrize("name", ["", "a b", "-bad.example", "[192.0.2.1]", "x" * 64 + ".example"])
async def test_an_invalid_domain_is_refused(domains: Domains, name: str) -> None:
    with pytest.raises(InvalidDomain):
        await domains.add(name)

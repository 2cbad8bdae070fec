"""The Store's parts: each method belongs to exactly one part, every part has a contract
suite, and the suites run on the engines that implement their parts."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from postroom.store import base
from postroom.store.sqlite import SqliteStore
from tests.store.conftest import ENGINES, PARTS, engines_for

PROTOCOLS = {
    "lifecycle": base.StoreLifecycle,
    "queue": base.QueueStore,
    "log": base.LogStore,
    "directory": base.DirectoryStore,
    "api": base.ApiStore,
}


def methods(protocol: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(protocol) if not name.startswith("_")}


def test_each_method_belongs_to_exactly_one_part() -> None:
    assert set(PROTOCOLS) == PARTS
    seen: dict[str, str] = {}
    for part, protocol in PROTOCOLS.items():
        for name in methods(protocol):
            assert name not in seen, f"{name} is in both {seen[name]} and {part}"
            seen[name] = part
    assert set(seen) == methods(base.Store)


def test_every_part_has_a_contract_suite() -> None:
    here = Path(__file__).parent
    marked = {
        part
        for path in here.glob("test_*.py")
        for part in PARTS
        if f'"{part}"' in path.read_text() and "store_parts(" in path.read_text()
    }
    assert marked == PARTS


def test_sqlite_implements_every_part_it_claims() -> None:
    for part in ENGINES["sqlite"]:
        missing = methods(PROTOCOLS[part]) - methods(SqliteStore)
        assert not missing, f"sqlite lacks {sorted(missing)} of {part}"


def test_suites_run_only_on_engines_implementing_their_parts() -> None:
    engines = {"full": PARTS, "queue-only": frozenset({"lifecycle", "queue"})}
    assert engines_for({"queue"}, engines) == ["full", "queue-only"]
    assert engines_for({"queue", "log"}, engines) == ["full"]
    with pytest.raises(pytest.UsageError, match="store_parts must name parts"):
        engines_for({"mailboxes"}, engines)
    with pytest.raises(pytest.UsageError, match="store_parts must name parts"):
        engines_for(set(), engines)
    with pytest.raises(pytest.UsageError, match="no engine implements"):
        engines_for({"log"}, {"queue-only": frozenset({"queue"})})

"""The Store's parts: each method belongs to exactly one part, every part has a contract
suite, and the suites run on the engines that implement their parts."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from postroom.errors import StoreError
from postroom.store import base
from postroom.store.open import require_parts
from postroom.store.postgres import PostgresStore
from postroom.store.sqlite import SqliteStore
from tests.store.conftest import ENGINES, PARTS, engines_for

PROTOCOLS = base.PARTS


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


def test_every_engine_implements_every_part_it_claims() -> None:
    classes: dict[str, type] = {"sqlite": SqliteStore, "postgresql": PostgresStore}
    assert set(classes) == set(ENGINES)
    for engine, parts in ENGINES.items():
        for part in parts:
            missing = methods(PROTOCOLS[part]) - methods(classes[engine])
            assert not missing, f"{engine} lacks {sorted(missing)} of {part}"


def test_an_engine_lacking_a_part_is_refused_with_one_line() -> None:
    class QueueOnly:
        async def start(self) -> None: ...

        async def aclose(self) -> None: ...

        async def instance_id(self) -> str:
            return ""

    lacking = ["queue", "log", "directory", "api", "suppression", "events"]
    assert base.missing_parts(QueueOnly()) == lacking
    assert base.missing_parts(PostgresStore("postgresql:///unused")) == []
    with pytest.raises(StoreError) as refused:
        require_parts(QueueOnly(), "newdb")
    assert str(refused.value) == (
        "the newdb storage engine does not implement the queue, log, directory, api,"
        " suppression, events part(s)"
        " of the store yet: a server needs every part"
    )


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

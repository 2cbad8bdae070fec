"""--compare-python: another build's twin of every postroom system, run beside it."""

from __future__ import annotations

from pathlib import Path

from bench.cli import IDLE_SYSTEMS, _submission_systems, in_turn
from bench.systems import build_systems
from bench.systems.postroom import Builds, PostroomSystem
from bench.workloads.local import LOCAL_LABELS, locals_
from bench.workloads.relay import RELAY_LABELS, relays

UNDER_TEST = Path("/opt/a/bin/python")
OTHER = Path("/opt/b/bin/python")
ALONE = Builds(UNDER_TEST, 2)
BESIDE = Builds(UNDER_TEST, 2, OTHER)
MARK = "[the build at --compare-python]"


def test_each_postroom_system_is_followed_by_its_twin_with_the_other_build() -> None:
    systems = build_systems(BESIDE)
    names = [s.name for s in systems]
    assert names[:4] == ["postroom", "postroom-compare", "postroom-local", "postroom-local-compare"]
    twins = [s for s in systems if isinstance(s, PostroomSystem) and s.name.endswith("-compare")]
    assert [s.python for s in twins] == [OTHER, OTHER]
    assert all(s.label.endswith(MARK) for s in twins)
    first = systems[0]
    assert isinstance(first, PostroomSystem) and first.python == UNDER_TEST
    assert MARK not in first.label
    assert twins[0].label == f"{first.label} {MARK}"


def test_without_another_build_there_is_no_twin() -> None:
    assert not [s for s in build_systems(ALONE) if s.name.endswith("-compare")]
    assert "postroom-compare" not in relays(ALONE)
    assert "postroom-compare" not in locals_(ALONE)


def test_relay_local_submission_and_idle_run_the_twin() -> None:
    relay = relays(BESIDE)
    assert list(relay) == ["postroom", "postroom-compare", "postfix-relay"]
    assert RELAY_LABELS["postroom-compare"] == f"{RELAY_LABELS['postroom']} {MARK}"
    local = locals_(BESIDE)
    assert list(local) == ["postroom", "postroom-compare", "postfix-virtual"]
    assert LOCAL_LABELS["postroom-compare"] == f"{LOCAL_LABELS['postroom']} {MARK}"
    chosen = {"postroom", "postroom-compare", "postfix-dovecot-sha512crypt"}
    submission = _submission_systems(chosen, BESIDE)
    assert [s.name for s in submission] == [
        "postroom",
        "postroom-compare",
        "postfix-dovecot-sha512crypt",
    ]
    twin = submission[1]
    assert isinstance(twin, PostroomSystem) and twin.python == OTHER and twin.submission
    assert "postroom-compare" in IDLE_SYSTEMS


def test_each_build_goes_first_in_every_other_run() -> None:
    entries = [("postroom", 1), ("postroom-compare", 2), ("postfix-hold", 3)]
    assert in_turn(entries, 1) == entries
    assert in_turn(entries, 2) == [("postroom-compare", 2), ("postroom", 1), ("postfix-hold", 3)]
    assert in_turn(entries, 3) == entries
    alone = [("postroom", 1), ("postfix-hold", 3)]  # no twin: the order never changes
    assert in_turn(alone, 2) == alone

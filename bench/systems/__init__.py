"""The systems under test, in table order."""

from __future__ import annotations

from pathlib import Path

from bench.systems.aiosmtpd import AiosmtpdSystem
from bench.systems.base import System
from bench.systems.haraka import HarakaSystem
from bench.systems.postfix import PostfixHoldSystem
from bench.systems.postroom import PostroomSystem, with_twins
from bench.systems.smtpsink import SmtpSinkSystem

__all__ = ["SYSTEM_NAMES", "build_systems"]

SYSTEM_NAMES = [
    "postroom",
    "postroom-local",
    "smtp-sink",
    "postfix-hold",
    "haraka-fsync",
    "haraka-discard",
    "aiosmtpd-fsync",
    "aiosmtpd-null",
]


def build_systems(
    postroom_python: Path, postroom_workers: int, compare_python: Path | None = None
) -> list[System]:
    """Every system; with ``compare_python``, each postroom system's twin run with that
    build follows it."""
    systems: list[System] = [
        PostroomSystem(postroom_python, "held", postroom_workers),
        PostroomSystem(postroom_python, "local", postroom_workers),
        SmtpSinkSystem(),
        PostfixHoldSystem(),
        HarakaSystem(fsync=True),
        HarakaSystem(fsync=False),
        AiosmtpdSystem(fsync=True),
        AiosmtpdSystem(fsync=False),
    ]
    return with_twins(systems, compare_python)

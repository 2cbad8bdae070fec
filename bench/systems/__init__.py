"""The systems under test, in table order."""

from __future__ import annotations

from bench.systems.aiosmtpd import AiosmtpdSystem
from bench.systems.base import System
from bench.systems.haraka import HarakaSystem
from bench.systems.postfix import PostfixHoldSystem
from bench.systems.postroom import Builds, PostroomSystem, with_twins
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


def build_systems(builds: Builds) -> list[System]:
    """Every system; with another build (``builds.compare``), each postroom system's
    twin run with it follows it."""
    systems: list[System] = [
        PostroomSystem(builds.python, "held", builds.workers),
        PostroomSystem(builds.python, "local", builds.workers),
        SmtpSinkSystem(),
        PostfixHoldSystem(),
        HarakaSystem(fsync=True),
        HarakaSystem(fsync=False),
        AiosmtpdSystem(fsync=True),
        AiosmtpdSystem(fsync=False),
    ]
    return with_twins(systems, builds.compare)

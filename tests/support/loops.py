"""Run a module's servers on asyncio's event loop and on uvloop's, which `postroom serve`
runs on when installed: their transports differ (TLS above all: uvloop has its own SSL
layer). A module opts in with ``from tests.support.loops import loop_factory``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import uvloop

__all__ = ["LoopFactory", "loop_factory"]

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_factory(request: pytest.FixtureRequest) -> LoopFactory:
    """Overrides tests/conftest.py's (asyncio's only) for the module that imports it."""
    return uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

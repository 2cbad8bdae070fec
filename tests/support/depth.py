"""How hard the randomized tests search: a quick sample by default, a deep one on request.

The default run proves every property on a fixed, smaller sample, so the whole suite stays
inside CI's time budget. ``POSTROOM_TEST_DEPTH=deep`` multiplies every example count (the
SMTP fuzz cases, schemathesis's examples, Hypothesis's ``max_examples``, the kill -9
rounds) by DEEP_FACTOR:
run it after changing a protocol core, a parser or the API document, and before a release.
"""

from __future__ import annotations

import os

__all__ = ["DEEP", "DEEP_FACTOR", "DEPTHS", "examples"]

DEPTHS = ("quick", "deep")
DEEP_FACTOR = 10
DEPTH = os.environ.get("POSTROOM_TEST_DEPTH") or "quick"
DEEP = DEPTH == "deep"


def examples(quick: int) -> int:
    """``quick`` examples in the default run, DEEP_FACTOR times as many in a deep one."""
    return quick * DEEP_FACTOR if DEEP else quick

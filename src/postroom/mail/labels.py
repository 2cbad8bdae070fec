"""Tags and metadata: what an application gives a message at send time so that its events
come back labelled (the API's ``tags`` and ``metadata`` fields; over SMTP, sendmail and
raw messages the ``X-Postroom-Tag`` and ``X-Postroom-Metadata`` header fields, which
intake's clean-up removes and hands here). One set of limits for every door.

``X-Postroom-Tag: a, b`` gives tags separated by commas, and may be repeated;
``X-Postroom-Metadata: {"order": "42"}`` is a JSON object of strings, and may be
repeated (a later key replaces an earlier one). Tags are kept once each, in order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "LINE_BREAKS",
    "MAX_KEY",
    "MAX_METADATA",
    "MAX_TAG",
    "MAX_TAGS",
    "MAX_VALUE",
    "METADATA_FIELD",
    "TAG_FIELD",
    "LabelProblem",
    "Labels",
    "line_problem",
    "read_labels",
]

MAX_TAGS: Final = 20
MAX_TAG: Final = 64  # characters
MAX_METADATA: Final = 50  # keys
MAX_KEY: Final = 64
MAX_VALUE: Final = 1024
TAG_FIELD: Final = "x-postroom-tag"
METADATA_FIELD: Final = "x-postroom-metadata"
# Every separator of str.splitlines(): the email package breaks a header at each. A label
# holds none of them, nor NUL, wherever it is shown (the API's one-line fields alike).
LINE_BREAKS: Final = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_NOT_IN_A_LINE: Final = frozenset(LINE_BREAKS + "\x00")


@dataclass(frozen=True, slots=True)
class Labels:
    tags: tuple[str, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class LabelProblem:
    field: str  # the header field as written in docs: "X-Postroom-Tag"
    problem: str


def line_problem(text: str, what: str, longest: int, *, empty: bool = False) -> str | None:
    """What is wrong with ``text`` as a one-line label, or None."""
    if not text and not empty:
        return f"{what} is empty"
    if len(text) > longest:
        return f"{what} is longer than {longest} characters"
    if any(c in _NOT_IN_A_LINE for c in text):
        return f"{what} holds a line break or NUL"
    return None


def read_labels(
    requests: Iterable[tuple[str, str]], given: Labels = Labels()
) -> Labels | LabelProblem:
    """``given`` (the API's fields) with what the request fields (lower-case name,
    unfolded value) add, within the limits; or the first problem found."""
    tags = dict.fromkeys(given.tags)
    metadata = dict(given.metadata)
    for name, value in requests:
        if name == TAG_FIELD:
            problem = _add_tags(tags, value.split(","))
            if problem is not None:
                return LabelProblem("X-Postroom-Tag", problem)
        elif name == METADATA_FIELD:
            problem = _add_metadata(metadata, value)
            if problem is not None:
                return LabelProblem("X-Postroom-Metadata", problem)
    return Labels(tuple(tags), tuple(metadata.items()))


def _add_tags(tags: dict[str, None], pieces: Sequence[str]) -> str | None:
    for piece in pieces:
        tag = piece.strip()
        if (problem := line_problem(tag, "a tag", MAX_TAG)) is not None:
            return problem
        tags[tag] = None
    if len(tags) > MAX_TAGS:
        return f"at most {MAX_TAGS} tags"
    return None


def _add_metadata(metadata: dict[str, str], value: str) -> str | None:
    try:
        document = json.loads(value)
    except (ValueError, RecursionError):
        return 'not a JSON object (e.g. {"order": "42"})'
    if not isinstance(document, dict):
        return 'not a JSON object (e.g. {"order": "42"})'
    for key, item in document.items():
        if not isinstance(item, str):
            return f"the value of {key[:MAX_KEY]!r} is not a string"
        problem = line_problem(key, "a key", MAX_KEY) or line_problem(
            item, f"the value of {key!r}", MAX_VALUE, empty=True
        )
        if problem is not None:
            return problem
        metadata[key] = item
    if len(metadata) > MAX_METADATA:
        return f"at most {MAX_METADATA} keys"
    return None

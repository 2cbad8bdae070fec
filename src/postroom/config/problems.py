"""Every configuration problem as one line: ``ConfigError(key, problem)``.

Two sources: TOML syntax errors (``toml_error``) and pydantic's validation errors
(``validation_error``). The second reads only what pydantic documents as stable, an
error's ``type`` code, ``loc``, ``input`` and ``ctx`` (docs.pydantic.dev, "Validation
Errors"), never its English ``msg``; each type code we know has a sentence in
``_SENTENCES``, and an unknown one still names the key and the value.

The key is written as the user wrote the file: dotted tables (``limits.auth.window``),
entries of ``[[mailers]]`` and ``[[routes]]`` by their name (``mailers.relay.port``),
other array entries by their index from 0 (``listeners[1].port``). When a file has
several problems the first is shown with a count of the rest; an unknown key comes
before a missing one, and a misspelled key (``feild``) is not also reported as the
key it should have been (``field: is required``).
"""

from __future__ import annotations

import difflib
import re
import tomllib
import types
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time
from enum import Enum
from typing import Annotated, Any, Literal, Union, cast, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from postroom.config.routes import SettingError
from postroom.config.settings import Settings
from postroom.errors import ConfigError

__all__ = ["toml_error", "validation_error"]

Loc = tuple[int | str, ...]

_NAME_PROBLEM = "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"

# Settings constrained by a pattern, and the words that explain the pattern; the key
# without names or indexes (``mailers.name``).
_PATTERNS = {
    "log.level": "must be one of 'debug', 'info', 'warning', 'error'",
    "mailers.name": _NAME_PROBLEM,
    "mailers.region": "must be an AWS region such as 'eu-west-1'",
    "routes.name": _NAME_PROBLEM,
    "tls.min_version": "must be '1.2' or '1.3'",
}

# The kinds of value a TOML file holds, by the Python type tomllib gives them.
_TOML_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (list, "an array"),
    (dict, "a table"),
    (datetime, "a date-time"),
    (date, "a date"),
    (time, "a time"),
)

# Wrong-type errors: what the key must be (then ", not <what it is>").
_WRONG_TYPE = {
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "dict_type": "must be a table",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "int_from_float": "must be a whole number",
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "list_type": "must be an array",
    "model_attributes_type": "must be a table",
    "model_type": "must be a table",
    "path_type": "must be a path (a string)",
    "string_type": "must be a string",
    "tuple_type": "must be an array",
}

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# tomllib before Python 3.14 gives the position only inside its message.
_TOML_POSITION = re.compile(
    r"^(?P<what>.*) \((?P<where>at line \d+, column \d+|at end of document)\)$"
)


# -- TOML ----------------------------------------------------------------------------


def toml_error(exc: tomllib.TOMLDecodeError, file_name: str) -> ConfigError:
    """``<file>: invalid TOML at line L, column C: <what>``."""
    what, where = str(exc), None
    lineno, colno = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    if isinstance(lineno, int) and isinstance(colno, int):  # Python 3.14+
        what, where = str(getattr(exc, "msg", what)), f"at line {lineno}, column {colno}"
    elif (match := _TOML_POSITION.match(what)) is not None:
        what, where = match["what"], match["where"]
    what = what[:1].lower() + what[1:]
    return ConfigError(
        file_name, f"invalid TOML {where}: {what}" if where else f"invalid TOML: {what}"
    )


# -- validation ----------------------------------------------------------------------


class _Problem:
    """One pydantic error, placed in the file: its ``loc`` without union tags, and the
    key as the user wrote it."""

    def __init__(self, error: ErrorDetails, data: Mapping[str, Any]) -> None:
        self.error = error
        self.kind = error["type"]
        self.ctx: Mapping[str, Any] = error.get("ctx") or {}
        annotation, loc = _walk(error["loc"])
        # The model holding the key (the member of a union, by its tag).
        parent = _walk(error["loc"][:-1])[0] if error["loc"] else None
        cause = self.ctx.get("error")
        if isinstance(cause, SettingError):
            loc = (*loc, *cause.loc)
            annotation = parent = None
        if self.kind in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, str(self.ctx.get("discriminator", "type")).strip("'"))
        self.annotation = annotation
        self.parent = parent
        self.loc: Loc = loc
        self.data = data

    def key(self, file_name: str) -> str:
        return _written(self.loc, self.data) or file_name

    def sentence(self) -> str:
        return _SENTENCES.get(self.kind, _unknown_kind)(self)


def validation_error(
    errors: Sequence[ErrorDetails], data: Mapping[str, Any], file_name: str
) -> ConfigError:
    """The first of pydantic's ``errors`` for the file's ``data`` as one ConfigError."""
    problems = _ordered([_Problem(error, data) for error in errors])
    first = problems[0]
    sentence = first.sentence()
    if len(problems) > 1:
        more = len(problems) - 1
        sentence += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ConfigError(first.key(file_name), sentence)


def _ordered(problems: list[_Problem]) -> list[_Problem]:
    """Unknown keys first; a missing key that an unknown key misspells is left out (one
    mistake, one problem), and a missing ``type`` is the misspelled key beside it."""
    for problem in problems:
        if problem.kind == "union_tag_not_found":
            _misspelled_tag(problem)
    misspelt = {
        (*p.loc[:-1], suggestion)
        for p in problems
        if p.kind == "extra_forbidden" and (suggestion := _suggestion(p)) is not None
    }
    kept = [p for p in problems if not (p.kind == "missing" and p.loc in misspelt)]
    return sorted(kept, key=lambda p: {"extra_forbidden": 0, "missing": 2}.get(p.kind, 1))


def _misspelled_tag(problem: _Problem) -> None:
    """``tpye = "smtp"`` in a ``[[mailers]]`` entry: pydantic sees only that ``type`` is
    missing; the entry's keys show the misspelling."""
    entry = problem.error["input"]
    if isinstance(entry, Mapping):
        close = difflib.get_close_matches(str(problem.loc[-1]), [str(k) for k in entry], n=1)
        if close:
            problem.kind = "extra_forbidden"
            problem.parent = problem.annotation
            problem.loc = (*problem.loc[:-1], close[0])
            problem.annotation = None


def _suggestion(problem: _Problem) -> str | None:
    # A [[mailers]] entry whose type is not known yet: the keys of every type.
    known = dict.fromkeys(name for model in _models(problem.parent) for name in model.model_fields)
    close = difflib.get_close_matches(str(problem.loc[-1]), list(known), n=1)
    return close[0] if close else None


# -- one sentence per error type ---------------------------------------------------------


def _unknown_key(problem: _Problem) -> str:
    suggestion = _suggestion(problem)
    return f"unknown key, did you mean {suggestion!r}?" if suggestion else "unknown key"


def _wrong_type(problem: _Problem) -> str:
    sentence = _WRONG_TYPE[problem.kind]
    if problem.kind == "tuple_type" and _models(_item_of(problem.annotation)):
        sentence = f"must be an array of tables ([[{_plain_key(problem.loc)}]])"
    return f"{sentence}, not {_toml_type(problem.error['input'])}"


def _bound(problem: _Problem) -> str:
    """From the field's limits, so a port says "between 0 and 65535" whichever end it
    crossed."""
    limits = {name: problem.ctx[name] for name in ("ge", "gt", "le", "lt") if name in problem.ctx}
    for item in _field_metadata(problem):
        for name in ("ge", "gt", "le", "lt"):
            if (value := getattr(item, name, None)) is not None:
                limits[name] = value
    if "ge" in limits and "le" in limits:
        return f"must be between {limits['ge']:g} and {limits['le']:g}"
    words = {"ge": "at least", "gt": "greater than", "le": "at most", "lt": "less than"}
    parts = [f"{words[name]} {value:g}" for name, value in limits.items()]
    return f"must be {' and '.join(parts)}"


def _choice(problem: _Problem) -> str:
    choices = _choices(problem.annotation)
    expected = _one_of([repr(c) for c in choices]) if choices else problem.ctx.get("expected")
    return f"must be {expected}, not {problem.error['input']!r}"


def _pattern(problem: _Problem) -> str:
    explained = _PATTERNS.get(_plain_key(problem.loc), f"must match {problem.ctx.get('pattern')}")
    return f"{explained}, not {problem.error['input']!r}"


def _too_short(problem: _Problem) -> str:
    least = problem.ctx.get("min_length", 1)
    return f"must have at least {least} item{'s' if least != 1 else ''}"


def _too_long(problem: _Problem) -> str:
    most = problem.ctx.get("max_length", 0)
    return f"must have at most {most} item{'s' if most != 1 else ''}"


def _our_own(problem: _Problem) -> str:
    """A validator of ours raised ValueError (SettingError): its message is the sentence."""
    return str(problem.ctx.get("error", "is not valid"))


def _bad_tag(problem: _Problem) -> str:
    tags = _one_of([t.strip() for t in str(problem.ctx.get("expected_tags", "")).split(",")])
    return f"must be {tags}, not {problem.ctx.get('tag')!r}"


def _unknown_kind(problem: _Problem) -> str:
    return f"{_shown(problem.error['input'])} is not valid here ({problem.kind})"


_SENTENCES: dict[str, Callable[[_Problem], str]] = {
    "extra_forbidden": _unknown_key,
    "missing": lambda problem: "is required",
    **dict.fromkeys(_WRONG_TYPE, _wrong_type),
    **dict.fromkeys(("greater_than", "greater_than_equal", "less_than", "less_than_equal"), _bound),
    "enum": _choice,
    "literal_error": _choice,
    "string_pattern_mismatch": _pattern,
    "too_short": _too_short,
    "too_long": _too_long,
    "value_error": _our_own,
    "assertion_error": _our_own,
    "union_tag_invalid": _bad_tag,
    "union_tag_not_found": lambda problem: "is required",
}


# -- where a key is --------------------------------------------------------------------


def _written(loc: Loc, data: Mapping[str, Any]) -> str:
    """``loc`` as the user wrote it: entries with a unique name by that name (unless the
    name is what is wrong)."""
    key, here = "", cast(object, data)
    for at, part in enumerate(loc):
        if isinstance(part, int):
            items: list[Any] = here if isinstance(here, list) else []
            here = items[part] if part < len(items) else None
            name = _unique_name(items, part) if loc[at + 1 : at + 2] != ("name",) else None
            key += f"[{part}]" if name is None else f".{_bare(name)}"
        else:
            here = here.get(part) if isinstance(here, Mapping) else None
            key += f".{_bare(part)}" if key else _bare(part)
    return key


def _unique_name(items: list[Any], index: int) -> str | None:
    names = [item.get("name") if isinstance(item, Mapping) else None for item in items]
    name = names[index] if index < len(names) else None
    if isinstance(name, str) and name and names.count(name) == 1:
        return name
    return None


def _bare(part: str) -> str:
    return part if _BARE_KEY.fullmatch(part) else f'"{part}"'


def _plain_key(loc: Loc) -> str:
    """The key without names or indexes, as docs/configuration.md lists it."""
    return ".".join(part for part in loc if isinstance(part, str))


# -- the settings models along a loc ---------------------------------------------------


def _walk(loc: Sequence[int | str]) -> tuple[Any, Loc]:
    """The annotation at ``loc``, and ``loc`` without the tags pydantic puts in it for
    the member of a discriminated union (``("mailers", 0, "smtp", "host")``)."""
    annotation: Any = Settings
    kept: list[int | str] = []
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(part, str) and (member := _tagged(annotation, part)) is not None:
            annotation = member
            continue
        annotation = _step(annotation, part)
        kept.append(part)
    return _unwrap(annotation), tuple(kept)


def _step(annotation: Any, part: int | str) -> Any:
    if isinstance(part, int):
        return _item_of(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(part)
        return field.annotation if field is not None else None
    return None


def _item_of(annotation: Any) -> Any:
    args = get_args(_unwrap(annotation))
    return _unwrap(args[0]) if args and get_origin(_unwrap(annotation)) is tuple else None


def _unwrap(annotation: Any) -> Any:
    """Without ``Annotated`` and without ``| None``."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(
            annotation
        ):
            rest = [a for a in get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The settings model, or the models of a union, that ``annotation`` is."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) not in (Union, types.UnionType):
        return []
    return [m for m in get_args(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]


def _tagged(annotation: Any, tag: str) -> type[BaseModel] | None:
    if get_origin(annotation) not in (Union, types.UnionType):
        return None
    for member in _models(annotation):
        field = member.model_fields.get("type")
        if field is not None and field.default == tag:
            return member
    return None


def _field_metadata(problem: _Problem) -> list[Any]:
    name = problem.loc[-1] if problem.loc else None
    for model in _models(problem.parent):
        if isinstance(name, str) and (field := model.model_fields.get(name)) is not None:
            return list(field.metadata)
    return []


def _choices(annotation: Any) -> list[object]:
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return [member.value for member in annotation]
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return []


def _one_of(options: Sequence[str]) -> str:
    """``['a', 'b', 'c']`` -> "'a', 'b' or 'c'"."""
    *head, last = options
    return f"{', '.join(head)} or {last}" if head else last


def _toml_type(value: object) -> str:
    for python_type, name in _TOML_TYPES:
        if isinstance(value, python_type):
            return name
    return type(value).__name__


def _shown(value: object) -> str:
    return repr(value) if isinstance(value, (str, int, float, bool)) else _toml_type(value)

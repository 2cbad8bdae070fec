"""Configuration: TOML -> frozen Settings; ConfigError(key, problem) for anything wrong.

``load(path)`` is the only way a TOML file becomes ``Settings``. Every problem, from a
TOML syntax error to a port out of range, becomes one ``ConfigError`` whose key is
the dotted path of the setting (``listeners[1].port``, ``limits.auth.window``) or the
file name for problems of the file as a whole. Relative paths in the result are made
absolute against the current directory, so later ``chdir`` calls change nothing.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import types
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from postroom.config.routes import SettingError
from postroom.config.settings import Settings
from postroom.errors import AddressError, ConfigError
from postroom.mail.address import parse_domain

__all__ = ["Settings", "load"]

# Error kinds (pydantic's "type") and the sentence that explains them.
_TYPE_PROBLEMS = {
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "dict_type": "must be a table",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "int_from_float": "must be a whole number",
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "list_type": "must be an array",
    "missing": "is required",
    "model_attributes_type": "must be a table",
    "model_type": "must be a table",
    "path_type": "must be a path (a string)",
    "string_type": "must be a string",
    "tuple_type": "must be an array",
}

_NAME_PROBLEM = "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"

# Settings constrained by a pattern, and the words that explain the pattern.
_PATTERN_PROBLEMS = {
    "log.level": "must be one of 'debug', 'info', 'warning', 'error'",
    "mailers.name": _NAME_PROBLEM,
    "routes.name": _NAME_PROBLEM,
    "tls.min_version": "must be '1.2' or '1.3'",
}

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

_SQLITE = "sqlite:///"
_STORAGE_SCHEMES = (_SQLITE, "postgresql://", "postgres://")

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TOML_POSITION = re.compile(
    r"^(?P<what>.*) \((?P<where>at line \d+, column \d+|at end of document)\)$"
)


def load(path: Path | None) -> Settings:
    """Read and check the settings; ``None`` gives every default."""
    name = str(path) if path is not None else "<defaults>"
    data = _read(path) if path is not None else {}
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc.errors(), name) from None
    _check_hostname(settings.hostname, given="hostname" in data)
    _check_storage(settings.storage)
    return _absolute_paths(settings)


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(str(path), "no such file") from None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), _toml_problem(str(exc))) from None


def _toml_problem(message: str) -> str:
    match = _TOML_POSITION.match(message)
    if match is None:
        return f"invalid TOML: {message}"
    what = match["what"]
    return f"invalid TOML {match['where']}: {what[:1].lower()}{what[1:]}"


def _check_hostname(hostname: str, *, given: bool) -> None:
    try:
        parse_domain(hostname)
    except AddressError:
        problem = f"{hostname!r} is not a valid domain name"
        if not given:
            problem += " (it is this machine's name; set hostname in the configuration)"
        raise ConfigError("hostname", problem) from None
    if hostname.startswith("["):
        raise ConfigError("hostname", "must be a domain name, not an address literal")


def _check_storage(storage: str | None) -> None:
    if storage is None:
        return
    if not storage.startswith(_STORAGE_SCHEMES):
        raise ConfigError("storage", "must be sqlite:///path/to/file.db or postgresql://...")
    if storage.startswith(_SQLITE) and (storage == _SQLITE or storage.endswith("/")):
        raise ConfigError("storage", f"{storage!r} names no database file")


def _absolute_paths(settings: Settings) -> Settings:
    def fix(path: Path) -> Path:
        return path.expanduser().absolute()

    tls, log, storage = settings.tls, settings.log, settings.storage
    if storage is not None and storage.startswith(_SQLITE) and len(storage) > len(_SQLITE):
        storage = f"{_SQLITE}{fix(Path(storage.removeprefix(_SQLITE)))}"
    return settings.model_copy(
        update={
            "data_dir": fix(settings.data_dir),
            "storage": storage,
            "tls": tls.model_copy(
                update={
                    "cert": tls.cert and fix(tls.cert),
                    "key": tls.key and fix(tls.key),
                }
            ),
            "log": log.model_copy(update={"file": log.file and fix(log.file)}),
        }
    )


# -- pydantic errors -> one line ---------------------------------------------------


def _config_error(errors: Sequence[ErrorDetails], file_name: str) -> ConfigError:
    first = errors[0]
    loc = _walk(first["loc"])[1]  # without union tags ("mailers[0].host", not ".smtp.host")
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, SettingError):
        loc = (*loc, *cause.loc)
    if first["type"] in _TAG_PROBLEMS:
        loc = (*loc, first.get("ctx", {})["discriminator"].strip("'"))
    key = _dotted(loc) if loc else file_name
    problem = _problem(first, key)
    if len(errors) > 1:
        more = len(errors) - 1
        problem += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ConfigError(key, problem)


def _dotted(loc: Sequence[int | str]) -> str:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            text = part if _BARE_KEY.fullmatch(part) else f'"{part}"'
            key += f".{text}" if key else text
    return key


def _problem(error: ErrorDetails, key: str) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "extra_forbidden":
        return _unknown_key(error["loc"])
    if kind in _TAG_PROBLEMS:
        return _TAG_PROBLEMS[kind](ctx)
    if kind == "too_short":
        return f"must have at least {ctx['min_length']} item{'s' if ctx['min_length'] > 1 else ''}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}:
        return _bounds(error["loc"]) or error["msg"].replace("Input should be", "must be")
    if kind == "enum":
        return f"must be {ctx['expected']}, not {error['input']!r}"
    if kind == "string_pattern_mismatch":
        explained = _PATTERN_PROBLEMS.get(_without_indexes(key), f"must match {ctx['pattern']}")
        return f"{explained}, not {error['input']!r}"
    if kind in _TYPE_PROBLEMS:
        problem = _TYPE_PROBLEMS[kind]
        if kind == "tuple_type" and _model_at((*error["loc"], 0)) is not None:
            problem = f"must be an array of tables ([[{key}]])"
        return problem if kind == "missing" else f"{problem}, not {_toml_type(error['input'])}"
    message = error["msg"]
    return message[:1].lower() + message[1:]


def _unknown_key(loc: Sequence[int | str]) -> str:
    model = _model_at(loc[:-1])
    known = list(model.model_fields) if model is not None else []
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    return f"unknown key, did you mean {close[0]!r}?" if close else "unknown key"


def _bounds(loc: Sequence[int | str]) -> str | None:
    field = _field_at(loc)
    if field is None:
        return None
    limits: dict[str, float] = {}
    for item in field.metadata:
        for name in ("ge", "gt", "le", "lt"):
            if (value := getattr(item, name, None)) is not None:
                limits[name] = value
    low = _low_bound(limits)
    high = _high_bound(limits)
    if "ge" in limits and "le" in limits:
        return f"must be between {limits['ge']:g} and {limits['le']:g}"
    if low and high:
        return f"must be {low} and {high}"
    return f"must be {low or high}" if low or high else None


def _low_bound(limits: dict[str, float]) -> str | None:
    if "ge" in limits:
        return f"at least {limits['ge']:g}"
    return f"greater than {limits['gt']:g}" if "gt" in limits else None


def _high_bound(limits: dict[str, float]) -> str | None:
    if "le" in limits:
        return f"at most {limits['le']:g}"
    return f"less than {limits['lt']:g}" if "lt" in limits else None


def _one_of(tags: str) -> str:
    """ "'a', 'b', 'c'" -> "'a', 'b' or 'c'"."""
    head, _, last = tags.rpartition(", ")
    return f"{head} or {last}" if head else last


# Errors of a discriminated union ([[mailers]] by ``type``): the key is the discriminator.
_TAG_PROBLEMS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "union_tag_invalid": lambda ctx: f"must be {_one_of(ctx['expected_tags'])}, not {ctx['tag']!r}",
    "union_tag_not_found": lambda ctx: "is required",
}


def _model_at(loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The settings model that holds the keys at ``loc`` (``()`` is the root)."""
    annotation = _walk(loc)[0]
    return (
        annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    )


def _walk(loc: Sequence[int | str]) -> tuple[Any, tuple[int | str, ...]]:
    """The annotation at ``loc``, and ``loc`` without the tags pydantic puts in it for the
    member of a discriminated union (``("mailers", 0, "smtp", "host")``)."""
    annotation: Any = Settings
    kept: list[int | str] = []
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(part, int):
            args = get_args(annotation)
            annotation = args[0] if args else None
        elif (member := _tagged_member(annotation, part)) is not None:
            annotation = member
            continue
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part)
            annotation = field.annotation if field is not None else None
        else:
            annotation = None
        kept.append(part)
    return _unwrap(annotation), tuple(kept)


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _tagged_member(annotation: Any, tag: str) -> type[BaseModel] | None:
    if get_origin(annotation) not in (Union, types.UnionType):
        return None
    for member in get_args(annotation):
        field = getattr(member, "model_fields", {}).get("type")
        if field is not None and field.default == tag:
            return member  # type: ignore[no-any-return]
    return None


def _field_at(loc: Sequence[int | str]) -> FieldInfo | None:
    if not loc or not isinstance(loc[-1], str):
        return None
    model = _model_at(loc[:-1])
    return model.model_fields.get(loc[-1]) if model is not None else None


def _without_indexes(key: str) -> str:
    return re.sub(r"\[\d+\]", "", key)


def _toml_type(value: object) -> str:
    for python_type, name in _TOML_TYPES:
        if isinstance(value, python_type):
            return name
    return type(value).__name__

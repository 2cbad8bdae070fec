"""The OpenAPI 3.1 document of the API, built from the pydantic models in ``schemas``."""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from postroom import __version__
from postroom.api import schemas
from postroom.api.idempotency import KEY_PATTERN

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{model}"
_JSON = "application/json"


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _answer(description: str, model: type[BaseModel] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if model is not None:
        answer["content"] = {_JSON: {"schema": _ref(model)}}
    return answer


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _answer("an error", schemas.ErrorBody) for status in statuses}


def _param(name: str, where: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    required = where == "path"
    return {
        "name": name,
        "in": where,
        "required": required,
        "schema": schema,
        "description": description,
    }


_EMAIL: Final = {"type": "string", "format": "email", "pattern": schemas.LINE}
_ID = _param("id", "path", {"type": "string"}, "The queue id")
_SECURED: Final[list[dict[str, list[str]]]] = [{"apiKey": []}]
_AUTH_ERRORS = (401, 403, 429, 500)  # 403: the API key lacks the scope


def _action(summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": _SECURED,
            "parameters": [_ID],
            "responses": {
                "200": _answer("the message now", schemas.MessageDetail),
                **_errors(*_AUTH_ERRORS, 404, 409, 503),
            },
        }
    }


def _send() -> dict[str, Any]:
    raw_schema = {"type": "string", "format": "binary"}
    return {
        "summary": "Send a message (JSON fields, or a raw RFC 5322 message)",
        "security": _SECURED,
        "parameters": [
            _param(
                "Idempotency-Key",
                "header",
                {"type": "string", "pattern": KEY_PATTERN},
                "Retries with the same key (per API key, 24 hours) get the first answer",
            ),
            _param("mail_from", "query", _EMAIL, "Raw form: the envelope sender"),
            _param(
                "rcpt",
                "query",
                {"type": "array", "items": _EMAIL},
                "Raw form: the envelope recipients (repeated)",
            ),
        ],
        "requestBody": {
            "required": True,
            "content": {
                _JSON: {"schema": _ref(schemas.SendRequest)},
                "message/rfc822": {"schema": raw_schema},
            },
        },
        "responses": {
            "202": _answer("durable in the queue", schemas.SendAccepted),
            **_errors(*_AUTH_ERRORS, 409, 413, 422, 503),
        },
    }


def _list() -> dict[str, Any]:
    statuses = ["queued", "deferred", "delivered", "bounced", "expired", "rejected", "held"]
    return {
        "summary": "The email log, newest first",
        "security": _SECURED,
        "parameters": [
            _param("status", "query", {"type": "string", "enum": statuses}, "A recipient in it"),
            _param(
                "to",
                "query",
                {"type": "string"},
                "A recipient address, or its domain, starts with this",
            ),
            _param("from", "query", {"type": "string"}, "The sender contains this"),
            _param(
                "since",
                "query",
                {
                    "type": "string",
                    "anyOf": [
                        {"pattern": schemas.UNIX_SECONDS},
                        {"format": "date-time", "pattern": schemas.RFC3339},
                    ],
                },
                "RFC 3339 date-time with its zone, or Unix seconds",
            ),
            _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 500}, "At most"),
            _param("cursor", "query", {"type": "string"}, "next_cursor of the previous page"),
            _param(
                "mailer",
                "query",
                {"type": "string"},
                "Attempted through this mailer (a capture mailer: the mail it kept)",
            ),
        ],
        "responses": {
            "200": _answer("a page of the log", schemas.MessageList),
            **_errors(*_AUTH_ERRORS, 422),
        },
    }


def openapi_document() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        schemas.SendRequest,
        schemas.SendAccepted,
        schemas.MessageDetail,
        schemas.MessageList,
        schemas.ErrorBody,
        schemas.Health,
        schemas.Readiness,
    ]
    _, definitions = models_json_schema(
        [(m, "validation" if m is schemas.SendRequest else "serialization") for m in models],
        ref_template=_REF,
    )
    one = {
        "get": {
            "summary": "One message: each recipient's status and every attempt",
            "security": _SECURED,
            "parameters": [_ID],
            "responses": {
                "200": _answer("the message", schemas.MessageDetail),
                **_errors(*_AUTH_ERRORS, 404),
            },
        },
        "delete": {
            "summary": "Delete a message from the queue and the log",
            "security": _SECURED,
            "parameters": [_ID],
            "responses": {"204": _answer("deleted"), **_errors(*_AUTH_ERRORS, 404, 503)},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "postroom", "version": __version__},
        "servers": [{"url": "/"}],
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/api/v1/messages": {"post": _send(), "get": _list()},
            "/api/v1/messages/{id}": one,
            "/api/v1/messages/{id}/retry": _action("Make pending recipients due now"),
            "/api/v1/messages/{id}/hold": _action("Keep the message from delivery"),
            "/api/v1/messages/{id}/release": _action("Let a held message be delivered"),
            "/api/v1/health": {
                "get": {
                    "summary": "Liveness, without authentication",
                    "responses": {"200": _answer("up", schemas.Health)},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness, without authentication: 503 names the failing parts",
                    "responses": {
                        "200": _answer("every part works", schemas.Readiness),
                        "503": _answer("some part keeps failing", schemas.Readiness),
                    },
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": {"description": "the OpenAPI document"}},
                }
            },
        },
    }

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
            **_errors(*_AUTH_ERRORS, 409, 413, 422, 503, 507),
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


_LIMIT: Final = {"type": "integer", "minimum": 1, "maximum": 1000}
_SCOPE: Final = {"type": "string", "maxLength": 253, "pattern": schemas.DOMAIN}
_TOKEN = _param("token", "path", {"type": "string"}, "The signed token postroom wrote")


def _read(summary: str, model: type[BaseModel], *params: dict[str, Any]) -> dict[str, Any]:
    """A GET with an API key answering ``model``."""
    return {
        "get": {
            "summary": summary,
            "security": _SECURED,
            "parameters": list(params),
            "responses": {"200": _answer(summary, model), **_errors(*_AUTH_ERRORS, 404, 422)},
        }
    }


def _suppressions() -> dict[str, Any]:
    return {
        **_read(
            "The suppression list, by address",
            schemas.SuppressionList,
            _param("scope", "query", _SCOPE, "A sender domain's entries; empty: the global ones"),
            _param("address", "query", _EMAIL, "Entries for this address"),
            _param("limit", "query", _LIMIT, "At most this many (default 100)"),
            _param("after", "query", {"type": "string"}, "next_cursor of the previous page"),
        ),
        "post": {
            "summary": "Suppress an address (globally, or for a sender domain)",
            "security": _SECURED,
            "requestBody": {
                "required": True,
                "content": {_JSON: {"schema": _ref(schemas.SuppressionIn)}},
            },
            "responses": {
                "200": _answer("listed already", schemas.SuppressionOut),
                "201": _answer("added", schemas.SuppressionOut),
                **_errors(*_AUTH_ERRORS, 413, 422, 503),
            },
        },
    }


def _unsuppress() -> dict[str, Any]:
    return {
        "delete": {
            "summary": "Take an address off the suppression list",
            "security": _SECURED,
            "parameters": [
                _param("address", "path", _EMAIL, "The suppressed address"),
                _param("scope", "query", _SCOPE, "The sender domain; absent: the global entry"),
            ],
            "responses": {
                "200": _answer("the entry removed", schemas.SuppressionOut),
                **_errors(*_AUTH_ERRORS, 404, 422, 503),
            },
        }
    }


def _open(summary: str, answers: dict[str, Any]) -> dict[str, Any]:
    """An operation without an API key (monitoring, tracking, provider callbacks)."""
    return {"summary": summary, "responses": answers}


def _unauthenticated() -> dict[str, Any]:
    """The paths outside /api/v1 that answer without an API key."""
    gif = {"description": "a 1x1 transparent GIF", "content": {"image/gif": {}}}
    page = {"description": "a page for the reader", "content": {"text/html": {}}}
    redirect = {
        "description": "to the link's URL",
        "headers": {"Location": {"schema": {"type": "string"}, "required": True}},
    }
    text = {"description": "the Prometheus text format", "content": {"text/plain": {}}}
    return {
        "/healthz": {
            "get": _open("Liveness", {"200": _answer("the process answers", schemas.Health)})
        },
        "/metrics": {
            "get": _open(
                "Counters and gauges in the Prometheus text format",
                {"200": text, **_errors(404, 500, 503)},
            )
        },
        "/hooks/{mailer}": {
            "post": {
                **_open(
                    "A provider's delivery events for mail sent through its API",
                    {
                        "200": _answer("recorded", schemas.HookAnswer),
                        **_errors(401, 404, 413, 422, 500, 503),
                    },
                ),
                "parameters": [
                    _param("mailer", "path", {"type": "string"}, "The [[mailers]] name")
                ],
                "requestBody": {"content": {_JSON: {"schema": {}}}},
            }
        },
        "/t/o/{token}": {
            "get": {
                **_open("The tracking pixel: an opened event", {"200": gif, **_errors(404, 500)}),
                "parameters": [_TOKEN],
            }
        },
        "/t/c/{token}": {
            "get": {
                **_open("A tracked link: a clicked event", {"302": redirect, **_errors(404, 500)}),
                "parameters": [_TOKEN],
            }
        },
        "/t/u/{token}": {
            "get": {
                **_open("The unsubscribe page (changes nothing)", {"200": page, **_errors(404)}),
                "parameters": [_TOKEN],
            },
            "post": {
                **_open(
                    "Unsubscribe (RFC 8058 one-click): an unsubscribed event, a suppression",
                    {"200": page, **_errors(404, 500, 503)},
                ),
                "parameters": [_TOKEN],
            },
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
        schemas.EventList,
        schemas.SuppressionList,
        schemas.SuppressionOut,
        schemas.SuppressionIn,
        schemas.WebhookList,
        schemas.WebhookDeliveryList,
        schemas.HookAnswer,
    ]
    requests = (schemas.SendRequest, schemas.SuppressionIn)
    _, definitions = models_json_schema(
        [(m, "validation" if m in requests else "serialization") for m in models],
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
            "/api/v1/messages/{id}/events": _read(
                "A message's events, in the shape webhooks get", schemas.EventList, _ID
            ),
            "/api/v1/suppressions": _suppressions(),
            "/api/v1/suppressions/{address}": _unsuppress(),
            "/api/v1/webhooks": _read(
                "The configured webhooks and what waits for each", schemas.WebhookList
            ),
            "/api/v1/webhooks/deliveries": _read(
                "The webhook deliveries, newest first",
                schemas.WebhookDeliveryList,
                _param("webhook", "query", {"type": "string"}, "This webhook's"),
                _param(
                    "state",
                    "query",
                    {"type": "string", "enum": ["pending", "delivered", "failed"]},
                    "In this state",
                ),
                _param("limit", "query", _LIMIT, "At most this many (default 100)"),
            ),
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
            **_unauthenticated(),
        },
    }

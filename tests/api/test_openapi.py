"""The OpenAPI document is valid, and every real answer matches its schemas."""

from __future__ import annotations

import base64
import subprocess
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate
from referencing import Registry, Resource
from starlette.applications import Starlette
from starlette.routing import Route

from tests.api.conftest import MESSAGE, Api


@pytest.fixture
def document(client: httpx.Client) -> dict[str, Any]:
    answer = client.get("/api/v1/openapi.json")
    assert answer.status_code == 200
    doc: dict[str, Any] = answer.json()
    return doc


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"].startswith("3.1")


def _validator(document: dict[str, Any], path: str, method: str, status: int) -> Any:
    operation = document["paths"][path][method]
    answer = operation["responses"][str(status)]  # KeyError: an undocumented status
    schema = answer["content"]["application/json"]["schema"]
    registry = Registry().with_resource(
        "urn:postroom", Resource.from_contents({**document, "$schema": _DIALECT})
    )
    ref = "urn:postroom" + schema["$ref"]
    return jsonschema.Draft202012Validator({"$ref": ref}, registry=registry)


_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def check(document: dict[str, Any], path: str, answer: httpx.Response) -> None:
    method = answer.request.method.lower()
    if answer.status_code == 204:
        assert "204" in document["paths"][path][method]["responses"]
        return
    validator = _validator(document, path, method, answer.status_code)
    validator.validate(answer.json())


@pytest.fixture
def exchanges(api: Api, client: httpx.Client) -> list[tuple[str, httpx.Response]]:
    """A request of each kind, with the document's path template it was made on."""
    one = "/api/v1/messages/{id}"
    done: list[tuple[str, httpx.Response]] = []
    sent = client.post(
        "/api/v1/messages",
        json={
            **MESSAGE,
            "tags": ["t"],
            "metadata": {"k": "v"},
            "attachments": [{"content": base64.b64encode(b"x").decode()}],
        },
    )
    done.append(("/api/v1/messages", sent))
    queue_id = sent.json()["id"]
    done.append(("/api/v1/messages", client.post("/api/v1/messages", json={"to": 1})))
    done.append(("/api/v1/messages", client.get("/api/v1/messages")))
    done.append(("/api/v1/messages", client.get("/api/v1/messages?limit=x")))
    done.append((one, client.get(f"/api/v1/messages/{queue_id}")))
    done.append((one, client.get("/api/v1/messages/NOPE")))
    for verb in ("hold", "retry", "release", "retry"):
        done.append((f"{one}/{verb}", client.post(f"/api/v1/messages/{queue_id}/{verb}")))
    done.append((one, client.delete(f"/api/v1/messages/{queue_id}")))
    with api.client(key="") as anonymous:
        done.append(("/api/v1/messages", anonymous.get("/api/v1/messages")))
        done.append(("/api/v1/health", anonymous.get("/api/v1/health")))
    return done


def test_every_real_answer_matches_the_document(
    document: dict[str, Any], exchanges: list[tuple[str, httpx.Response]]
) -> None:
    answers = exchanges
    statuses = {a.status_code for _, a in answers}
    assert {200, 202, 204, 401, 404, 409, 422} <= statuses
    for path, answer in answers:
        check(document, path, answer)


def test_a_wrong_answer_would_not_match(document: dict[str, Any]) -> None:
    validator = _validator(document, "/api/v1/messages", "post", 202)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"id": "X", "message_id": "<m>", "recipients": [], "extra": 1})


def test_curl_sends_a_message_with_an_api_key(api: Api) -> None:
    result = subprocess.run(
        [
            "curl", "--silent", "--show-error", "--fail-with-body",
            "-H", f"Authorization: Bearer {api.key}",
            "-H", "Content-Type: application/json",
            "--data", '{"from": "shop@example.com", "to": "a@example.net", "text": "hi"}',
            "--write-out", "\\n%{http_code}",
            f"{api.url}/api/v1/messages",
        ],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    body, status = result.stdout.rsplit("\n", 1)
    assert status == "202"
    queue_id = httpx.Response(202, content=body).json()["id"]
    assert api.server.call(api.server.store.message(queue_id)) is not None


def test_every_route_of_the_api_is_in_the_document(api: Api, document: dict[str, Any]) -> None:
    """A new endpoint cannot be left out: schemathesis tests only what the document names
    (the dashboard, a separate app under /dashboard, is not the API)."""
    served = api.server.server.api
    assert served is not None and isinstance(served.app, Starlette)
    routes = {
        (method.lower(), route.path)
        for route in served.app.routes
        if isinstance(route, Route) and route.methods is not None
        for method in route.methods
        if method != "HEAD"
    }
    routes.discard(("get", "/"))  # the redirect to the dashboard
    documented = {(m, p) for p, ops in document["paths"].items() for m in ops}
    assert routes == documented

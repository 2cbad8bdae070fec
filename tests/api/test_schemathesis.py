"""Schemathesis against the running API: generated requests (bounded) for every operation
in the OpenAPI document; no answer is a server error or strays from the document."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import Api

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 25  # per operation: bounded, so the suite stays quick


@pytest.mark.parametrize("mode", list(GenerationMode), ids=str)
def test_generated_requests_get_documented_answers(
    make_api: Callable[..., Api], mode: GenerationMode
) -> None:
    """Positive: requests the document allows; negative: requests it forbids (those must
    get a documented 4xx, never a 500)."""
    api = make_api(api={"port": 0, "rate_limit": 0})
    schema = schemathesis.openapi.from_url(f"{api.url}/api/v1/openapi.json")
    headers = {"Authorization": f"Bearer {api.key}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    # Every operation but the document itself (schemathesis leaves its source out).
    assert len(operations) == 8

    for operation in operations:
        inputs = (operation.body, operation.query, operation.path_parameters, operation.headers)
        if mode is GenerationMode.NEGATIVE and not any(len(i) for i in inputs):
            continue  # nothing to get wrong (the health check)

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,  # the same examples every run: a failure is reproducible
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Case) -> None:
            case.call_and_validate(base_url=api.url, headers=headers, checks=CHECKS)

        check()

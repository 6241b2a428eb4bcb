"""Schemathesis against a live `/openapi.json`, shared by the REST and model-endpoint tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.core.result import Ok

#: Every generated response must be no 5xx and conform to the document.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]

#: An operation of the document (its parameters', responses' and schema's types vary).
Operation = schemathesis.APIOperation[Any, Any, Any, Any]


@dataclass
class ContractRun:
    """How much a run exercised."""

    operations: int = 0
    cases: int = 0


def run_contract(
    base_url: str,
    headers: Mapping[str, str],
    *,
    include: Callable[[str], bool],
    examples_per_operation: int,
    after_each: Callable[[Operation], None] | None = None,
) -> ContractRun:
    """Generate and check `examples_per_operation` calls of each operation whose path passes
    `include`; `after_each` may then make a test's own calls of that operation."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    run = ContractRun()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the document is invalid: {result.err()}"
        operation = result.ok()
        if not include(operation.path):
            continue
        run.operations += 1

        @settings(
            max_examples=examples_per_operation,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def exercise(case: schemathesis.Case[Operation]) -> None:
            run.cases += 1
            case.call_and_validate(base_url=base_url, headers=dict(headers), checks=CHECKS)

        exercise()
        if after_each is not None:
            after_each(operation)
    return run

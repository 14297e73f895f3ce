"""Property-based fuzzing of HTTP API v1 from its own OpenAPI document (schemathesis).

Schemathesis generates valid and invalid requests for every operation in
``/openapi.json``; whatever it sends, the answer must not be a 5xx, and the
answer's body must match the schema documented for its status. The main
suite runs a short budget per operation; ``make reliability`` runs at least
5,000 requests (``RANKER_FUZZ_EXAMPLES``, ``RANKER_FUZZ_MIN_REQUESTS``).
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from api import create_app

EXAMPLES = int(os.environ.get("RANKER_FUZZ_EXAMPLES", "15"))
MIN_REQUESTS = int(os.environ.get("RANKER_FUZZ_MIN_REQUESTS", "0"))  # per generation mode


@pytest.fixture(scope="module")
def fuzz_app(demo_engine_of, embedded_redis, tmp_path_factory):
    engine = demo_engine_of(30)
    return create_app(
        {
            "TESTING": True,
            "DATA_DIR": str(tmp_path_factory.mktemp("fuzz-data")),
            "REDIS_URL": embedded_redis,
            "PREFIX": "fuzz",
            "ENGINE": engine,
            "USER_KEY_SECRET": "s",
        }
    )


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_gets_a_server_error(fuzz_app, mode):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 11
    fuzzed, requests = 0, []
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case) -> None:
            response = case.call(app=fuzz_app)
            requests.append(response.status_code)
            assert response.status_code < 500, f"{case.method} {case.formatted_path} {case.body!r} -> {response.status_code} {response.text[:300]}"
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

        try:
            fuzz()
            fuzzed += 1
        except Unsatisfiable:  # negative mode: an operation with no parameters and no body has nothing to make invalid
            assert mode == GenerationMode.NEGATIVE, operation.label
    assert fuzzed >= (len(operations) if mode == GenerationMode.POSITIVE else 7)
    print(f"\n{mode.value}: {len(requests)} requests over {len(operations)} operations, status codes {sorted(set(requests))}")
    assert len(requests) >= MIN_REQUESTS, f"only {len(requests)} requests generated, {MIN_REQUESTS} asked for"

"""Property-based fuzzing of HTTP API v1 from its own OpenAPI document (schemathesis).

Schemathesis generates valid and invalid requests for every operation in
``/openapi.json`` of a server with both keys configured, sending the admin key;
whatever it sends, every schemathesis check must hold (no 5xx, every status
documented, bodies and headers as documented, ...). The main suite runs a
short budget per operation and asserts that it really sent that many
requests; ``make reliability`` runs at least 5,000 (``RANKER_FUZZ_EXAMPLES``,
``RANKER_FUZZ_MIN_REQUESTS``). Deeply nested bodies and wrong methods (405
with ``Allow``, RFC 9110) are sent besides.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api import create_app

EXAMPLES = int(os.environ.get("RANKER_FUZZ_EXAMPLES", "15"))
MIN_REQUESTS = int(os.environ.get("RANKER_FUZZ_MIN_REQUESTS", "150"))  # per generation mode: fewer means the fuzzing did not run
ADMIN_KEY = "fuzz-admin-key"


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
            "INGEST_KEY": "fuzz-ingest-key",
            "ADMIN_KEY": ADMIN_KEY,
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
            response = case.call(app=fuzz_app, headers={"X-API-Key": ADMIN_KEY})
            requests.append(response.status_code)
            assert response.status_code < 500, f"{case.method} {case.formatted_path} {case.body!r} -> {response.status_code} {response.text[:300]}"
            # every check schemathesis has but one: a schema-valid body may still be refused (422) for what a schema cannot
            # say (a picture that does not decode, an item outside the ranking's slate)
            case.validate_response(response, headers={"X-API-Key": ADMIN_KEY}, excluded_checks=[positive_data_acceptance])

        try:
            fuzz()
            fuzzed += 1
        except Unsatisfiable:  # negative mode: an operation with no parameters and no body has nothing to make invalid
            assert mode == GenerationMode.NEGATIVE, operation.label
    assert fuzzed >= (len(operations) if mode == GenerationMode.POSITIVE else 7)
    print(f"\n{mode.value}: {len(requests)} requests over {len(operations)} operations, status codes {sorted(set(requests))}")
    assert len(requests) >= MIN_REQUESTS, f"only {len(requests)} requests generated, {MIN_REQUESTS} asked for"


def test_wrong_methods_are_405_with_allow_and_nesting_is_a_4xx(fuzz_app):
    """RFC 9110: a 405 names the methods the resource allows. And no depth of nesting reaches a 5xx."""
    client = fuzz_app.test_client()
    spec = client.get("/openapi.json").get_json()
    checked = 0
    for path, item in spec["paths"].items():
        url = path.replace("{item_id}", "sku-000001").replace("{version}", "v1").replace("{experiment_id}", "e1").replace("{user_id}", "u1")
        for method in {"get", "put", "post", "delete", "patch"} - set(item):
            response = client.open(url, method=method.upper(), headers={"X-API-Key": ADMIN_KEY})
            assert response.status_code == 405, (method, url, response.status_code)
            allowed = {name.strip().lower() for name in response.headers["Allow"].split(",")}
            assert set(item) <= allowed, (method, url, response.headers["Allow"])
            checked += 1
    assert checked >= 40
    for depth in (10, 33, 900, 200_000):
        for url in ("/v1/rank", "/v1/feedback", "/v1/items", "/v1/experiments"):
            body = '{"user_id": ' + "[" * depth + "]" * depth + "}"
            status = client.post(url, data=body, content_type="application/json", headers={"X-API-Key": ADMIN_KEY}).status_code
            assert 400 <= status < 500, (url, depth, status)

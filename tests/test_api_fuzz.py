"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis + hypothesis).

Every operation gets generated requests, valid and invalid (wrong types, missing fields,
odd Unicode, huge numbers); no response may be a 5xx, and every response must match the
documented status codes, content types and schemas. Bounded: ``MAX_EXAMPLES`` per operation.
"""

import time

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from qa import KnowledgeBase, Settings
from qa.http.app import create_app

from helpers import SEED, FakeEmbedder

pytestmark = pytest.mark.stress  # thousands of generated requests: `make test`, not `make test-fast`

EXAMPLES = {GenerationMode.POSITIVE: 100, GenerationMode.NEGATIVE: 50}
"""Generated requests per operation: valid ones, and ones that break the schema on purpose."""
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# the operations, read from the schema of an app that opens nothing until it starts
OPERATIONS = [
    (path, method.upper()) for path, methods in create_app(settings=Settings()).openapi()["paths"].items() for method in methods
]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory):
    index = tmp_path_factory.mktemp("fuzz") / "index"
    kb = KnowledgeBase.open(index, embedder=FakeEmbedder(), chunk_tokens=60, chunk_overlap=10)
    kb.ingest([SEED])
    app = create_app(kb)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the app's lifespan, for the session
    deadline = time.monotonic() + 60
    while TestClient(app).get("/ready").status_code != 200:  # /ready is 503 (by design) while the model warms
        assert time.monotonic() < deadline, "the app never became ready"
        time.sleep(0.1)
    yield schema
    kb.close()


CASES = [(p, m, mode) for p, m in OPERATIONS for mode in EXAMPLES if (p, mode) != ("/health", GenerationMode.NEGATIVE)]


@pytest.mark.parametrize(("path", "method", "mode"), CASES, ids=[f"{m} {p} {mode}" for p, m, mode in CASES])
def test_api_never_fails_on_generated_requests(api_schema, path, method, mode):
    """/health takes nothing, so it has no invalid requests to generate."""
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES[mode], deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(case) -> None:
        case.call_and_validate(checks=CHECKS)

    fuzz()

"""Fuzzing every operation of the OpenAPI document against the live server: no 5xx, ever.

schemathesis generates valid and invalid requests from the app's OpenAPI document; every
answer must be a 2xx or a 4xx, its status and content type must be ones the document lists
for the operation, and a JSON answer must match the schema the document gives for it. The
event stream is left out: it never ends by design.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from backend.app import create_app
from backend.settings import Settings
from shared.protocol import RAW_PIXELS_MEDIA_TYPE
from tests import server_fixtures as fx

server, tiny_models = fx.server, fx.tiny_models  # fixtures, one server for this module


@schemathesis.serializer(RAW_PIXELS_MEDIA_TYPE)
def raw_pixels(_ctx: object, value: object) -> bytes:
    """Raw pixel bodies are fuzzed as whatever bytes were generated."""
    return value if isinstance(value, bytes) else str(value).encode()


# the document does not depend on settings, so it is built without a server
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi()).exclude(path="/v1/events")


@pytest.fixture(scope="module", autouse=True)
def registry_listed(server: fx.LiveServer) -> None:
    """List the models once before fuzzing: the first listing imports spandrel in a server
    thread, and Python 3.11 before 3.11.9 can fail (SystemError: AST constructor recursion
    depth mismatch) when two threads parse Python source at once (cpython#106905)."""
    assert httpx.get(f"{server.url}/v1/models", timeout=60).status_code == 200


@schema.parametrize()
@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case, server: fx.LiveServer) -> None:
    case.call_and_validate(
        base_url=server.url,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )

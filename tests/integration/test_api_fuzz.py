"""Property-based fuzz of the whole OpenAPI document against the in-process app and a real database.

Schemathesis generates requests from each operation's declared schema: valid ones ("positive") and ones
that break it ("negative"). Every answer must be no 5xx, a declared status code, with the declared content
type and a body matching the declared schema; invalid input must be rejected with a 4xx. Derandomized with
a bounded number of examples per operation, so a run is reproducible and CI is stable.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from rag_server.api.app import create_app
from rag_server.config import Settings
from tests.integration.conftest import APP_BASE_URL

pytestmark = pytest.mark.integration

# The routes do not depend on the settings: the document can be built without a database.
SCHEMA = schemathesis.openapi.from_dict(create_app(Settings(database_url="postgresql://unused/x")).openapi())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
POSITIVE_EXAMPLES = 100
NEGATIVE_EXAMPLES = 50


def to_httpx(case: schemathesis.Case) -> dict[str, Any]:
    """The request schemathesis would send (requests' keyword arguments), as httpx keyword arguments."""
    kwargs = case.as_transport_kwargs(base_url=APP_BASE_URL)
    out = {key: kwargs[key] for key in ("method", "url", "params", "headers", "json", "files") if key in kwargs}
    data = kwargs.get("data")
    if isinstance(data, bytes | str):
        out["content"] = data  # an encoded body (multipart, raw): httpx sends it as is
    elif data is not None:
        out["data"] = data
    return out


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


async def send_and_check(
    client: httpx.AsyncClient, case: schemathesis.Case, checks: list[Any]
) -> None:
    response = await client.request(**to_httpx(case))
    case.validate_response(response, checks=checks)


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
@fuzz_settings(POSITIVE_EXAMPLES)
@given(data=st.data())
async def test_valid_requests_get_no_5xx_and_match_the_schema(
    app_client: httpx.AsyncClient, operation: Any, data: st.DataObject
) -> None:
    case = data.draw(operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    await send_and_check(app_client, case, CHECKS)


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
@fuzz_settings(NEGATIVE_EXAMPLES)
@given(data=st.data())
async def test_invalid_requests_get_a_4xx(
    app_client: httpx.AsyncClient, operation: Any, data: st.DataObject
) -> None:
    case = data.draw(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    await send_and_check(app_client, case, [*CHECKS, negative_data_rejection])

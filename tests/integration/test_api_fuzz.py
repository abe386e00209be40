"""Property-based fuzz of the whole OpenAPI document against the in-process app and a real database.

Schemathesis generates requests from each operation's declared schema: valid ones ("positive") and ones
that break it ("negative"). Every answer must be no 5xx, a declared status code, with the declared content
type and a body matching the declared schema; invalid input must be rejected with a 4xx. Derandomized with
a bounded number of examples per operation, so a run is reproducible and CI is stable.
"""

from __future__ import annotations

import json
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
# An operation without parameters or body (GET /health) has nothing to get wrong.
WITH_INPUT = [
    op for op in OPERATIONS if op.definition.raw.get("parameters") or op.definition.raw.get("requestBody")
]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
POSITIVE_EXAMPLES = 200
NEGATIVE_EXAMPLES = 100


# Text schemathesis does not generate (it keeps to what UTF-8 encodes) or rarely does: NUL, which PostgreSQL
# text and jsonb cannot hold, and lone surrogates, which a JSON string escape can carry but UTF-8 cannot.
HOSTILE_TEXT = ("\x00", "\ud800", "\udfff")
# Query strings are percent-encoded UTF-8: a client cannot send a lone surrogate there.
HOSTILE_QUERY_TEXT = ("\x00",)


def with_hostile_text(value: Any, data: st.DataObject, hostile: tuple[str, ...]) -> Any:
    """`value` with some of its strings (dict keys included) carrying a hostile character somewhere."""
    if isinstance(value, str):
        if not data.draw(st.booleans()):
            return value
        at = data.draw(st.integers(0, len(value)))
        return value[:at] + data.draw(st.sampled_from(hostile)) + value[at:]
    if isinstance(value, list):
        return [with_hostile_text(item, data, hostile) for item in value]
    if isinstance(value, dict):
        return {
            with_hostile_text(key, data, hostile): with_hostile_text(item, data, hostile)
            for key, item in value.items()
        }
    return value


def to_httpx(case: schemathesis.Case, hostile: st.DataObject | None = None) -> dict[str, Any]:
    """The request schemathesis would send (requests' keyword arguments), as httpx keyword arguments;
    with `hostile`, some of its JSON and query strings get a hostile character."""
    kwargs = case.as_transport_kwargs(base_url=APP_BASE_URL)
    if hostile is not None:
        if "json" in kwargs:
            kwargs["json"] = with_hostile_text(kwargs["json"], hostile, HOSTILE_TEXT)
        if kwargs.get("params"):
            kwargs["params"] = with_hostile_text(kwargs["params"], hostile, HOSTILE_QUERY_TEXT)
    out = {key: kwargs[key] for key in ("method", "url", "params", "headers", "files") if key in kwargs}
    if "json" in kwargs:
        # Escaped like any JSON client (\u0000, \ud800): httpx's own encoder refuses lone surrogates.
        out["content"] = json.dumps(kwargs["json"]).encode()
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
    client: httpx.AsyncClient,
    case: schemathesis.Case,
    checks: list[Any],
    hostile: st.DataObject | None = None,
) -> None:
    response = await client.request(**to_httpx(case, hostile))
    case.validate_response(response, checks=checks)


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
@fuzz_settings(POSITIVE_EXAMPLES)
@given(data=st.data())
async def test_valid_requests_get_no_5xx_and_match_the_schema(
    app_client: httpx.AsyncClient, operation: Any, data: st.DataObject
) -> None:
    case = data.draw(operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    hostile = data if data.draw(st.booleans(), label="hostile text") else None
    await send_and_check(app_client, case, CHECKS, hostile)


@pytest.mark.parametrize("operation", WITH_INPUT, ids=lambda op: op.label)
@fuzz_settings(NEGATIVE_EXAMPLES)
@given(data=st.data())
async def test_invalid_requests_get_a_4xx(
    app_client: httpx.AsyncClient, operation: Any, data: st.DataObject
) -> None:
    case = data.draw(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    await send_and_check(app_client, case, [*CHECKS, negative_data_rejection])

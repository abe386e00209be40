"""Property-based fuzz of the whole OpenAPI document against the in-process app and a real database.

Schemathesis generates requests from each operation's declared schema: valid ones ("positive") and ones
that break it ("negative"). Every answer must be no 5xx, a declared status code, with the declared content
type and a body matching the declared schema; invalid input must be rejected with a 4xx. Derandomized with
a bounded number of examples per operation, so a run is reproducible and CI is stable. `just fuzz N`
explores further: N × (100 + 50) examples, from a new random seed each run.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, reject, settings
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

# The routes do not depend on the settings: the document can be built without a database.
SCHEMA = schemathesis.openapi.from_dict(create_app(Settings(database_url="postgresql://unused/x")).openapi())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
# An operation without parameters or body (GET /health) has nothing to get wrong.
WITH_INPUT = [
    op for op in OPERATIONS if op.definition.raw.get("parameters") or op.definition.raw.get("requestBody")
]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Generating the examples is most of the cost (~50 ms each): the suite keeps a fixed 50 + 25 per
# operation, beside the boundary cases below; `just fuzz N` draws N times 100 + 50 afresh.
DEPTH = int(os.environ.get("RAG_FUZZ_DEPTH", "0"))
POSITIVE_EXAMPLES = 100 * DEPTH or 50
NEGATIVE_EXAMPLES = 50 * DEPTH or 25


# Values schemathesis does not generate (it keeps to what UTF-8 encodes) or rarely does. NUL: PostgreSQL
# text and jsonb cannot hold it. Lone surrogates: a JSON string escape can carry them, UTF-8 cannot (query
# strings are percent-encoded UTF-8: a client cannot send one there). Integers beyond int4/bigint, which
# PostgreSQL refuses to bind (an unbounded OFFSET was a 500).
HOSTILE_TEXT = ("\x00", "\ud800", "\udfff")
HOSTILE_QUERY_TEXT = ("\x00",)
HOSTILE_INTEGERS = (2**31, 2**63, -(2**63) - 1, 10**30)


def with_hostile_values(value: Any, data: st.DataObject, hostile: tuple[str, ...]) -> Any:
    """`value` with some of its strings (dict keys too) carrying a hostile character somewhere and some
    integers (or integer strings, as query parameters are) replaced by one beyond PostgreSQL's."""
    if isinstance(value, bool) or not isinstance(value, str | int | list | dict):
        return value
    if isinstance(value, list):
        return [with_hostile_values(item, data, hostile) for item in value]
    if isinstance(value, dict):
        return {
            with_hostile_values(key, data, hostile): with_hostile_values(item, data, hostile)
            for key, item in value.items()
        }
    if not data.draw(st.booleans()):
        return value
    if isinstance(value, int) or value.lstrip("-").isdigit():
        number = data.draw(st.sampled_from(HOSTILE_INTEGERS))
        return number if isinstance(value, int) else str(number)
    at = data.draw(st.integers(0, len(value)))
    return value[:at] + data.draw(st.sampled_from(hostile)) + value[at:]


def to_httpx(case: schemathesis.Case, hostile: st.DataObject | None = None) -> dict[str, Any]:
    """The request schemathesis would send (requests' keyword arguments), as httpx keyword arguments;
    with `hostile`, some of its JSON and query values are made hostile."""
    kwargs = case.as_transport_kwargs(base_url=APP_BASE_URL)
    if hostile is not None:
        if "json" in kwargs:
            kwargs["json"] = with_hostile_values(kwargs["json"], hostile, HOSTILE_TEXT)
        if kwargs.get("params"):
            kwargs["params"] = with_hostile_values(kwargs["params"], hostile, HOSTILE_QUERY_TEXT)
    out = {key: kwargs[key] for key in ("method", "url", "params", "headers") if key in kwargs}
    if "files" in kwargs:
        out["files"] = [(name, as_form_part(part)) for name, part in kwargs["files"] or []]
    if "json" in kwargs:
        # Escaped like any JSON client (\u0000, \ud800): httpx's own encoder refuses lone surrogates.
        out["content"] = json.dumps(kwargs["json"]).encode()
    data = kwargs.get("data")
    if isinstance(data, bytes | str):
        out["content"] = data  # an encoded body (multipart, raw): httpx sends it as is
    elif data is not None:
        out["data"] = data
    return out


def each(operations: list[Any]) -> Any:
    """Parametrize a test over every operation of the OpenAPI document."""
    return pytest.mark.parametrize("operation", operations, ids=lambda op: op.label)


@each(OPERATIONS)
def test_every_operation_declares_its_success_schema_and_503(operation: Any) -> None:
    responses = operation.definition.raw["responses"]
    success = [code for code in responses if code.startswith("2")]
    assert success, "no success response declared"
    for code in success:
        if code == "204":
            continue
        content = responses[code].get("content", {})
        assert content, f"{code} has no content"
        for media_type, declared in content.items():
            assert declared.get("schema") or declared.get("itemSchema"), f"{code} {media_type}: no schema"
    if operation.label == "GET /health/live":
        return  # liveness never touches the database (it must answer through an outage)
    assert "503" in responses, "the database can be unavailable: 503 must be declared"


def as_form_part(part: tuple[Any, ...]) -> tuple[Any, ...]:
    """A multipart part httpx can encode: schemathesis renders extra form fields' numbers as ints."""
    filename, value, *rest = part
    if not isinstance(value, bytes | str):
        value = json.dumps(value)
    return (filename, value, *rest)


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=DEPTH == 0,
        print_blob=DEPTH > 0,  # a random failure prints the @reproduce_failure line that replays it
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


@functools.cache
def strategy(label: str, mode: GenerationMode) -> st.SearchStrategy[schemathesis.Case]:
    """One operation's cases, built once: building the strategy for every example was a quarter of the
    module's time. The same strategy draws the same cases."""
    (operation,) = (op for op in OPERATIONS if op.label == label)
    return operation.as_strategy(generation_mode=mode)


async def send_and_check(
    client: httpx.AsyncClient,
    case: schemathesis.Case,
    checks: list[Any],
    hostile: st.DataObject | None = None,
) -> None:
    try:
        request = client.build_request(**to_httpx(case, hostile))
    except httpx.InvalidURL:
        # httpx builds no query over 64 KiB (two long JSON parameters, metadata and text, can reach it):
        # such a request is never sent, so there is no answer to check.
        reject()
    request.read()  # a multipart body is a stream: read it once so the checks can look at it
    response = await client.send(request)
    try:
        case.validate_response(response, checks=checks)
    except Exception as exc:
        # Schemathesis' "Reproduce with" shows the generated case, not what hostile values made of it.
        exc.add_note(f"Sent: {request.method} {request.url} {request.content[:2000]!r}")
        raise


@each(OPERATIONS)
@fuzz_settings(POSITIVE_EXAMPLES)
@given(data=st.data())
async def test_valid_requests_get_no_5xx_and_match_the_schema(
    app_client: httpx.AsyncClient, operation: Any, data: st.DataObject
) -> None:
    case = data.draw(strategy(operation.label, GenerationMode.POSITIVE))
    hostile = data if data.draw(st.booleans(), label="hostile values") else None
    await send_and_check(app_client, case, CHECKS, hostile)


@each(WITH_INPUT)
@fuzz_settings(NEGATIVE_EXAMPLES)
@given(data=st.data())
async def test_invalid_requests_get_a_4xx(
    app_client: httpx.AsyncClient, operation: Any, data: st.DataObject
) -> None:
    case = data.draw(strategy(operation.label, GenerationMode.NEGATIVE))
    await send_and_check(app_client, case, [*CHECKS, negative_data_rejection])


@each(OPERATIONS)
async def test_schema_boundaries_get_no_5xx_and_invalid_ones_a_4xx(
    app_client: httpx.AsyncClient, operation: Any
) -> None:
    """Schemathesis' coverage phase: a fixed list of cases at each constraint's edges (min/max lengths and
    values, missing and unexpected fields, wrong types), valid and invalid."""
    config = SCHEMA.config.generation_for(operation=operation)
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    for case in SCHEMA.iter_coverage_cases(operation, generation_modes=modes, generation_config=config):
        negative = case.meta is not None and case.meta.generation.mode is GenerationMode.NEGATIVE
        await send_and_check(app_client, case, [*CHECKS, negative_data_rejection] if negative else CHECKS)

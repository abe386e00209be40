"""The OpenAPI document says what the API answers: /v1 validation errors are OpenAI's 400, never a 422;
session ids accept the server's UUID or a client-chosen id; our request bodies take no unknown field."""

from __future__ import annotations

from typing import Any

import pytest

from rag_server.api.app import create_app
from rag_server.chat.models import EXTERNAL_ID_PATTERN
from rag_server.config import Settings


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(Settings(database_url="postgresql://unused/x")).openapi()


def operations(document: dict[str, Any], prefix: str) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": op
        for path, item in document["paths"].items()
        if path.startswith(prefix)
        for method, op in item.items()
    }


def test_v1_operations_declare_openai_400s_and_no_422(document: dict[str, Any]) -> None:
    v1 = operations(document, "/v1/")
    assert {
        "GET /v1/models",
        "POST /v1/chat/completions",
        "POST /v1/responses",
        "POST /v1/embeddings",
    } <= set(v1)
    for name, op in v1.items():
        assert "422" not in op["responses"], name
        for status, response in op["responses"].items():
            if status != "200":
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/OpenAIError", (name, status)
    for name in ("POST /v1/chat/completions", "POST /v1/responses", "POST /v1/embeddings"):
        assert "400" in v1[name]["responses"], name
    # The rest of the API keeps FastAPI's 422 (its validation errors are {"detail": [...]}).
    assert "422" in operations(document, "/query")["POST /query"]["responses"]


def test_session_ids_are_a_uuid_or_a_client_chosen_id(document: dict[str, Any]) -> None:
    expected = [{"type": "string", "format": "uuid"}, {"type": "string", "pattern": EXTERNAL_ID_PATTERN}]
    for path in ("/chat/history/{session_id}", "/chat/sessions/{session_id}"):
        for op in document["paths"][path].values():
            (param,) = [p for p in op["parameters"] if p["name"] == "session_id"]
            assert param["schema"]["anyOf"] == expected, path
    schemas = document["components"]["schemas"]
    assert schemas["ClearRequest"]["properties"]["session_id"]["anyOf"] == expected
    query = schemas["QueryRequest"]["properties"]["session_id"]  # optional: that, or null
    assert query["anyOf"] == [
        {"anyOf": expected, "description": query["anyOf"][0]["description"]},
        {"type": "null"},
    ]
    session = document["components"]["schemas"]["ChatSession"]["properties"]
    assert "external_id" in session


def test_every_request_body_of_ours_refuses_a_field_it_does_not_take(document: dict[str, Any]) -> None:
    """A misspelt field was ignored: `colections` made a key for every collection. Every object a body
    of ours holds declares its fields and forbids others (extra="forbid"); /v1 keeps OpenAI's leniency."""
    schemas = document["components"]["schemas"]
    reached: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            name = ref.rsplit("/", 1)[-1]
            if ref and name not in reached:
                reached.add(name)
                walk(schemas[name])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for name, op in operations(document, "/").items():
        if not name.split(" ")[1].startswith("/v1/"):
            walk(op.get("requestBody"))
    models = {name for name in reached if "properties" in schemas[name]}
    assert {"CreateKey", "SearchRequest", "DuplicateCheck", "FileDigest"} <= models
    assert [name for name in sorted(models) if schemas[name].get("additionalProperties") is not False] == []

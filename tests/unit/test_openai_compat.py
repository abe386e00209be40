"""openai_compat.service.query_request: whatever the server's own QueryRequest refuses in a /v1 turn
is the caller's input (a 4xx domain error), never a ValidationError (a 500)."""

from __future__ import annotations

import pytest

from rag_server.errors import InvalidInputError, NotFoundError
from rag_server.openai_compat.service import query_request


def test_a_collection_reference_no_collection_can_have_is_an_unknown_model() -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        query_request("rag:" + "a" * 150, "a question", "hybrid", "a" * 150)


def test_a_question_query_request_refuses_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="the question: String should have at most 20000 characters"):
        query_request("rag:alpha", "a" * 20_001, "hybrid", "alpha")


def test_a_valid_turn_is_a_query_request() -> None:
    request = query_request("rag:alpha:bm25", "a question", "bm25", "alpha")
    assert (request.query, request.search_type, request.collections) == ("a question", "bm25", ["alpha"])

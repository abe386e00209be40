"""Text matches (Chroma's `where_document`) as the API checks them, and the SQL they become (run against
PostgreSQL in tests/integration/test_search_api.py)."""

from __future__ import annotations

from typing import Any

import pytest

from rag_server.retrieval.metadata_match import MAX_CONDITIONS
from rag_server.retrieval.text_match import check_text_match, chunk_contains, text_clause


@pytest.mark.parametrize(
    "match",
    [
        {"$contains": "insulin"},
        {"$not_contains": "draft"},
        {"$contains": "a", "$not_contains": "b"},
        {"$or": [{"$contains": "a"}, {"$and": [{"$contains": "b"}, {"$not_contains": "c"}]}]},
    ],
)
def test_chromas_where_document_forms_are_taken_as_given(match: dict[str, Any]) -> None:
    assert check_text_match(match) == match


@pytest.mark.parametrize(
    ("match", "sentence"),
    [
        ("insulin", 'a JSON object with an operator, like {"$contains": "insulin"}'),
        ({}, "a JSON object with an operator"),
        ({"$regex": "x"}, "'$regex' is no operator ($contains, $not_contains, $and, $or)"),
        ({"contains": "x"}, "'contains' is no operator"),
        ({"$contains": 1}, "$contains: a text"),
        ({"$contains": ""}, "$contains: String should have at least 1 character"),
        ({"$contains": "x" * 1_001}, "$contains: String should have at most 1000 characters"),
        ({"$contains": "\udfff"}, "$contains: Value error, lone surrogate U+DFFF"),
        # An exact text: a NUL made a space (as in a query) would match another text.
        ({"$not_contains": "a\x00b"}, "$not_contains: a text without NUL characters"),
        ({"$or": []}, "$or: a list of 1 to 50 matches"),
        ({"$and": [{"$contains": "a"}, {}]}, "$and[1]: a JSON object with an operator"),
        ({"$or": [{"$and": [{"$or": [{"$and": [{"$contains": "a"}]}]}]}]}, "nested deeper than 4 levels"),
        ({"$or": [{"$contains": str(i)} for i in range(MAX_CONDITIONS + 1)]}, "$or: a list of 1 to 50"),
        (
            {"$or": [{"$contains": "a", "$not_contains": str(i)} for i in range(26)]},
            "more than 50 conditions",
        ),
    ],
)
def test_anything_else_is_refused_with_where_and_why(match: Any, sentence: str) -> None:
    with pytest.raises(ValueError) as refused:
        check_text_match(match)
    assert sentence in str(refused.value)


def test_the_sql_binds_every_text_and_negates_with_not() -> None:
    params: list[Any] = ["earlier"]
    match = {"$or": [{"$contains": "a"}, {"$not_contains": "b'; --"}]}
    sql = text_clause(match, params, 1, chunk_contains("c.text"))
    assert params == ["earlier", "a", "b'; --"]
    assert sql == "(strpos(c.text, $2::text) > 0 OR NOT (strpos(c.text, $3::text) > 0))"
    both = text_clause({"$contains": "x", "$not_contains": "y"}, [], 4, chunk_contains("c.text"))
    assert both == "(strpos(c.text, $4::text) > 0 AND NOT (strpos(c.text, $5::text) > 0))"

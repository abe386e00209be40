"""Metadata matches as the API checks them: Chroma's `where` forms are taken, anything else is refused
with a sentence naming where (the SQL they become is run in tests/integration/test_search_api.py)."""

from __future__ import annotations

from typing import Any

import pytest

from rag_server.retrieval.metadata_match import MAX_CONDITIONS, check_match


@pytest.mark.parametrize(
    "match",
    [
        {},
        {"team": "a", "year": 2020, "ratio": 0.5, "draft": False},
        {"tags": ["rust", "go"]},
        {"year": {"$gte": 2019, "$lt": 2022}},
        {"year": {"$eq": 2020}, "team": {"$ne": "b"}},
        {"year": {"$in": [2019, 2021]}, "team": {"$nin": ["b", "c"]}},
        {"$or": [{"team": "a"}, {"$and": [{"year": {"$gt": 1.5}}, {"tags": "go"}]}]},
    ],
)
def test_chromas_where_forms_are_taken_as_given(match: dict[str, Any]) -> None:
    assert check_match(match) == match


def test_texts_and_keys_are_cleaned_as_stored_metadata_is() -> None:
    assert check_match({"a\x00b": {"$in": ["x\x00y"]}}) == {"a b": {"$in": ["x y"]}}


@pytest.mark.parametrize(
    ("match", "sentence"),
    [
        ([1], "a JSON object"),
        ({"year": {"$gt": "2020"}}, "year.$gt: a number, not a text"),
        ({"year": {"$lte": True}}, "year.$lte: a number, not true/false"),
        ({"year": {"$regex": "x"}}, "year: '$regex' is no operator"),
        ({"year": {"nested": 1}}, "year: 'nested' is no operator"),
        ({"year": {}}, 'year: an operator, like {"$gte": 2020}'),
        ({"$not": {"a": 1}}, "'$not' is no operator here"),
        ({"$or": []}, "$or: a list of 1 to 50 matches"),
        ({"$or": {"a": 1}}, "$or: a list of 1 to 50 matches"),
        ({"$and": [{"a": 1}, {}]}, "$and: an empty match would select everything"),
        ({"$or": [{"a": {"$in": "x"}}]}, "$or[0].a.$in: a list of values"),
        ({"a": {"$nin": []}}, "a.$nin: a list of 1 to 50 values"),
        ({"a": []}, "a: a list of 1 to 50 values"),
        ({"a": [["x"]]}, "a[0]: a text, number or true/false, not a list"),
        ({"a": None}, "a: a text, number or true/false, not null"),
        ({"a": "x" * 2_001}, "a: "),
        ({"": 1}, "the key ''"),
        ({"\udfff": {"$gt": "x"}}, "the key '\\udfff'"),
        ({"$\udfff": 1}, "'$\\udfff' is no operator"),
        ({"$and": [{"$or": [{"$and": [{"$or": [{"a": 1}]}]}]}]}, "nested deeper than 4 levels"),
        ({f"k{i}": i for i in range(MAX_CONDITIONS + 1)}, f"more than {MAX_CONDITIONS} conditions"),
        ({"$or": [{"a": {"$gt": i, "$lt": i + 2}} for i in range(26)]}, "more than 50 conditions"),
    ],
)
def test_anything_else_is_refused_with_where_and_why(match: Any, sentence: str) -> None:
    with pytest.raises(ValueError) as refused:
        check_match(match)
    assert sentence in str(refused.value)

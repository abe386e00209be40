"""Document metadata rules (ingestion/metadata.py): what jsonb can hold, bounded, one sentence when not."""

from __future__ import annotations

import json

import pytest

from rag_server.errors import InvalidInputError
from rag_server.ingestion.metadata import (
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    check_metadata,
    merge_metadata,
    parse_metadata_json,
)


def nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


def test_an_object_within_the_limits_is_kept_and_nul_becomes_a_space() -> None:
    value = {"team": "x", "year": 2020, "ok": True, "none": None, "tags": ["a", {"b": 1.5}], "s": "a\x00b"}
    assert check_metadata(value) == {**value, "s": "a b"}
    assert check_metadata(nested(MAX_METADATA_DEPTH)) == nested(MAX_METADATA_DEPTH)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ([1], "must be a JSON object"),
        ("text", "must be a JSON object"),
        (nested(MAX_METADATA_DEPTH + 1), "deeper than"),
        ({"k": "v" * MAX_METADATA_BYTES}, "over the limit of 16 KiB"),
        ({"": 1}, "key"),
        ({"k" * 201: 1}, "key"),
        ({"n": float("nan")}, "not a number"),
        ({"n": float("inf")}, "not a number"),
        ({"s": "\ud800"}, "surrogate"),
        ({"s": {"\udc00": 1}}, "surrogate"),
    ],
)
def test_anything_else_is_an_invalid_input_sentence(value: object, needle: str) -> None:
    with pytest.raises(InvalidInputError, match=needle):
        check_metadata(value)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("{", "not valid JSON"),
        ('{"n": NaN}', "NaN"),
        ('{"n": -Infinity}', "Infinity"),
        ("[" * 5000, "deeper"),
    ],
)
def test_form_text_that_is_not_a_storable_object(raw: str, needle: str) -> None:
    with pytest.raises(InvalidInputError, match=needle):
        parse_metadata_json(raw, "metadata")


def test_the_file_wins_key_by_key_and_the_merge_is_checked() -> None:
    assert merge_metadata({"team": "x", "year": 1}, {"year": 2}) == {"team": "x", "year": 2}
    assert merge_metadata({"team": "x"}, None) == {"team": "x"}
    half = "v" * (MAX_METADATA_BYTES // 2)
    with pytest.raises(InvalidInputError, match="over the limit"):
        merge_metadata({"a": half}, {"b": half})
    assert json.loads(json.dumps(merge_metadata({}, {"a": [1]}))) == {"a": [1]}

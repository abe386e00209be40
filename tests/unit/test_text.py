from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, Field, ValidationError

from rag_server.text import CleanText, clean_text


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("plain ascii", "plain ascii"),
        ("a\x00b", "a b"),
        ("\x00", " "),
        ("caf\u00e9 \U0001f600\x00", "caf\u00e9 \U0001f600 "),  # a real astral character is kept
    ],
)
def test_clean_text_replaces_nul_keeping_the_length(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean
    assert len(clean_text(raw)) == len(raw)


@pytest.mark.parametrize("raw", ["x\ud800", "\udfff", "caf\u00e9 \ud83d"])
def test_clean_text_refuses_a_lone_surrogate(raw: str) -> None:
    with pytest.raises(ValueError, match="lone surrogate"):
        clean_text(raw)


class Model(BaseModel):
    text: CleanText = Field(min_length=1, max_length=3)
    optional: CleanText | None = Field(default=None, min_length=1, max_length=3)


def test_clean_text_fields_are_cleaned_and_limits_count_what_was_sent() -> None:
    parsed = Model.model_validate(json.loads('{"text": "\\u0000", "optional": "a\\u0000"}'))
    assert (parsed.text, parsed.optional) == (" ", "a ")
    for field in ("text", "optional"):
        for refused in ("ab\x00c", "\ud800"):
            with pytest.raises(ValidationError):
                Model.model_validate({"text": "ok", field: refused})

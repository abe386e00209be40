from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import BaseModel, Field, ValidationError

from rag_server.text import Cleaned, CleanText, canonical, clean_text


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


class Bounded(BaseModel):
    attribute: CleanText = Field(default="", max_length=3)
    alias: Annotated[str, Field(max_length=3), Cleaned] = ""
    optional: Annotated[str, Field(max_length=3), Cleaned] | None = None
    listed: list[Annotated[str, Field(max_length=3), Cleaned]] = []


@pytest.mark.parametrize(
    ("field", "value"), [("attribute", "abcd"), ("alias", "abcd"), ("optional", "abcd"), ("listed", ["abcd"])]
)
def test_a_limit_before_cleaned_is_a_strings_limit(field: str, value: object) -> None:
    # After the validator (Annotated[CleanText, Field(max_length=3)]), pydantic checks the limit as a
    # container's: "Value should have at most 3 items after validation".
    with pytest.raises(ValidationError) as refused:
        Bounded.model_validate({field: value})
    (error,) = refused.value.errors()
    assert (error["type"], error["msg"]) == ("string_too_long", "String should have at most 3 characters")
    kept = Bounded.model_validate({field: "a\x00c" if isinstance(value, str) else ["a\x00c"]})
    assert getattr(kept, field) in ("a c", ["a c"])


def test_no_request_field_puts_its_length_limit_after_the_cleaning() -> None:
    # The shapes whose limit pydantic checks as a container's (above); the API no longer rewords them.
    wrong = re.compile(
        r"Annotated\[CleanText( \| None)?, (Field|Query)\(|CleanText \| None = Field\([^)]*_length"
    )
    services = Path(__file__).resolve().parents[2] / "services"
    found = [
        f"{path.relative_to(services)}:{number}"
        for path in services.rglob("*.py")
        if path.name != "text.py"  # its docstring shows the wrong shape
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if wrong.search(line)
    ]
    assert found == []


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("plain ascii", "plain ascii"),
        ("Gro\u0308\u00dfe", "Gr\u00f6\u00dfe"),  # decomposed, as macOS writes it: composed
        ("\ufb01nancial \ufb02ows, e\ufb00ect, o\ufb03ce", "financial flows, effect, office"),
        ("ba\ufb04e", "baffle"),
        ("\ufb06reet of \ufb05ars, caf\u00e9", "street of stars, caf\u00e9"),
        ("\u00e9l\u00e8ve", "\u00e9l\u00e8ve"),  # accents stay: BM25 folds them, the text keeps them
    ],
)
def test_canonical_text_is_composed_with_latin_ligatures_spelled_out(raw: str, stored: str) -> None:
    """A PDF's text held "\ufb01nancial" (one glyph for "fi"): BM25 and the model never read "financial"."""
    assert canonical(raw) == stored


def test_the_cjk_characters_are_the_ones_bm25_reads_one_by_one() -> None:
    """CJK_RUN (the search highlights' one-character words, the extractive answer's pairs) holds migration
    0025's CJK_CLASS, the characters rag_bm25_text sets apart: a character in one and not the other would be
    marked where BM25 did not match it, or missed where it did."""
    import importlib

    from rag_server.text import CJK_RUN

    migration = importlib.import_module("rag_server.infra.migrations.versions.0025_bm25_cjk")
    assert CJK_RUN.pattern == f"[{migration.CJK_CLASS.encode().decode('unicode_escape')}]+"

"""Text as it may enter the system from outside: what PostgreSQL and UTF-8 can hold.

PostgreSQL `text` and `jsonb` cannot hold NUL (a query binding it fails with an error, i.e. a 500 for
what is only odd input), and a lone surrogate (valid in a JSON string escape, not in UTF-8) cannot be
encoded for the database, a tokenizer or the reply. Request models check every free-text field with
`CleanText` where it enters (NUL replaced, a lone surrogate a 422), so nothing behind them has to.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator
from pydantic_core import PydanticCustomError

# Han, Hiragana, Katakana, Hangul (CJK Extension A, Unified and Compatibility Ideographs, Extensions B-G):
# scripts written without spaces between words, which BM25 reads as characters and pairs (migration
# 0025's rag_bm25_text, its SQL copy of this class) and the extractive answer by pairs.
CJK_RUN = re.compile(
    "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0003134f]+"
)

# A JSON parser joins a valid escaped pair into one character: any surrogate left in a str is lone.
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(value: str) -> str:
    """`value` with each NUL replaced by a space; a lone surrogate is refused with a ValueError.

    NUL is replaced, not dropped: the length stays the same, so a limit means the same before and after
    cleaning (the OpenAPI document's maxLength/minLength count what the client sent) and "\\x00" is not "".
    A lone surrogate is not text at all (no UTF-8 for it): refused, a 422 in a request, as it always was.
    """
    if not value.isascii() and (bad := _SURROGATE.search(value)):
        raise ValueError(
            f"lone surrogate U+{ord(bad.group()):04X} at position {bad.start()}: not valid Unicode"
        )
    return value.replace("\x00", " ")


# Latin letters without a decomposition to an ASCII letter, folded as BM25 folds them (migration 0027's
# rag_bm25_text, whose SQL lists them too); a mark after a Latin letter is dropped once decomposed.
_LATIN_FOLDS = str.maketrans({
    "Æ": "AE", "æ": "ae", "Þ": "TH", "þ": "th", "ß": "ss", "ẞ": "SS", "Ĳ": "IJ", "ĳ": "ij", "Œ": "OE",
    "œ": "oe", "Ð": "D", "ð": "d", "Ø": "O", "ø": "o", "Đ": "D", "đ": "d", "Ħ": "H", "ħ": "h", "ı": "i",
    "ĸ": "q", "Ŀ": "L", "ŀ": "l", "Ł": "L", "ł": "l", "ŉ": "n", "Ŋ": "N", "ŋ": "n", "Ŧ": "T", "ŧ": "t",
    "ſ": "s",
})  # fmt: skip
_LATIN_MARKS = re.compile("(?<=[A-Za-zÆæÞþßẞĲĳŒœÐðØøĐđĦħıĸĿŀŁłŉŊŋŦŧſ])[\u0300-\u036f]+")


def fold_latin(text: str) -> str:
    """`text` with its Latin accents folded as the BM25 leg folds them: "élève" -> "eleve", "Straße" ->
    "Strasse"; other scripts keep their marks ("й" stays "й")."""
    if text.isascii():
        return text
    stripped = _LATIN_MARKS.sub("", unicodedata.normalize("NFD", text))
    return unicodedata.normalize("NFC", stripped).translate(_LATIN_FOLDS)


# The Latin ligatures of Unicode's Alphabetic Presentation Forms, spelled out (their compatibility
# decomposition). A PDF's text gives "ﬁnancial" where its font drew one glyph for "fi"; neither BM25 nor the
# model reads that as "financial", and no one types it.
_LIGATURES = str.maketrans({"ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "st", "ﬆ": "st"})
_LIGATURE = re.compile("[\ufb00-\ufb06]")


def canonical(text: str) -> str:
    """`text` in the one form every text is stored and searched in (parsed and imported chunks, queries,
    "Contains"): composed (NFC: "o" + U+0308, as macOS writes it, is then "ö"), Latin ligatures spelled
    out ("ﬁ" -> "fi"). A check, no copy, when it already is (nearly always)."""
    if text.isascii():
        return text
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return text.translate(_LIGATURES) if _LIGATURE.search(text) else text


def clean_generated(text: str) -> str:
    """A model's text (an LLM's answer, title, condensed question) made storable: NUL replaced by a space,
    as `clean_text` does, and a lone surrogate (half of a pair a provider split, or sent alone) by U+FFFD.
    Not refused: the text is not the caller's input, and the rest of it is the answer."""
    if not text.isascii():
        text = _SURROGATE.sub("\ufffd", text)
    return clean_text(text)


def _clean_if_text(value: Any) -> Any:
    # Before pydantic's own str validation (whose refusal of a surrogate depends on the field's constraints);
    # anything but a str is left to that validation.
    return clean_text(value) if isinstance(value, str) else value


Cleaned = BeforeValidator(_clean_if_text)
"""Passes a `str` through `clean_text`. A length limit goes BEFORE it in the same `Annotated`:
`Annotated[str, Field(max_length=100), Cleaned]`. After it (`Annotated[CleanText, Field(...)]`, or on
`CleanText | None`), pydantic cannot apply the limit to the str and checks the validator's result as a
container instead: the same limit, but its error counts "items", not characters."""

CleanText = Annotated[str, Cleaned]
"""A `str` field passed through `clean_text`; use it (or `Cleaned`) for every free-text request field.
Unbounded, or bounded by its own `Field(...)` as a model's attribute (`query: CleanText = Field(...)`)."""


def _refuse_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("bool_is_no_number", "a number, not true/false")
    return value


NotBool = BeforeValidator(_refuse_bool)
"""On a request's number field: JSON's true/false refused (a 422; /v1: OpenAI's 400), where pydantic's
lax mode reads true as 1 and false as 0 (`top_k: true` searched for one hit, `max_tokens: true` cut the
answer after one token, `min_similarity: false` set a floor of 0). A bound goes before it, as with
`Cleaned`: `Annotated[int, Field(ge=1), NotBool]`."""


def _refuse_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank", "must not be blank (white space only)")
    return value


NotBlank = AfterValidator(_refuse_blank)
"""On a question or query: white space alone is refused (a 422), where it searched for whatever is nearest
to an empty text. After `Cleaned`: a NUL is white space by then."""

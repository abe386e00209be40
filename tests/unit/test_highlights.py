"""The highlighter's words (retrieval/highlights.py) as BM25 reads them, without a database."""

from __future__ import annotations

import re
import sys
import unicodedata

from rag_server.retrieval.highlights import _marks_class, word_spans


def words(text: str) -> list[str]:
    return [word for _, _, word in word_spans(text)]


def test_every_combining_mark_continues_a_word() -> None:
    marks = re.compile(f"[{_marks_class()}]")
    every = [chr(c) for c in range(0x300, sys.maxunicode + 1) if unicodedata.category(chr(c)).startswith("M")]
    assert [m for m in every if not marks.match(m)] == []


def test_words_are_split_where_bm25_splits_them() -> None:
    assert words("FY-2024 was 10.5% up; see docs.example.com or jane.doe@example.com") == [
        "FY", "2024", "was", "10.5", "up", "see", "docs", "example", "com",
        "or", "jane", "doe", "example", "com",
    ]  # fmt: skip
    # A decomposed accent and a Hindi vowel sign stay inside their word; CJK is a character at a time.
    assert words(unicodedata.normalize("NFD", "élève") + " नमस्ते 年假") == [
        unicodedata.normalize("NFD", "élève"), "नमस्ते", "年", "假",
    ]  # fmt: skip


def test_offsets_are_code_points() -> None:
    text = "\U0001f600 policy"
    assert word_spans(text) == [(2, 8, "policy")]
    assert text[2:8] == "policy"

"""Migration 0028 (native BM25 splits URLs, addresses, paths and a number after a hyphen) changes only
`rag_bm25_text` on a pg_search database, whose tokenizer already splits them; the native engine's
chunks are indexed again."""

from __future__ import annotations

import pytest

from tests.unit.test_pg_search_sql import recorded_upgrade

REVISION = "0028_bm25_split_words"


def test_0028_replaces_only_the_function_on_pg_search_and_reindexes_on_native(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [function] = recorded_upgrade(monkeypatch, REVISION, "pg_search")
    assert function.lstrip().startswith("CREATE OR REPLACE FUNCTION rag_bm25_text(t text)")
    assert "IMMUTABLE STRICT PARALLEL SAFE" in function and "regexp_replace(CASE WHEN" in function
    # No backslash: the body means the same with standard_conforming_strings off (0027's E'' aside).
    assert "\\" not in function.replace("E'\\\\1'", "")
    native = recorded_upgrade(monkeypatch, REVISION, "native")
    assert native[0] == function and len(native) == 2 and "bm25_index_add(ids, texts, colls)" in native[1]

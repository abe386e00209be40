"""The ParadeDB (pg_search 0.25.x) statement: it cannot run here, so check what we generate."""

from __future__ import annotations

import re
from uuid import UUID

from rag_server.retrieval.bm25 import pg_search_statement
from rag_server.retrieval.models import SearchFilters

HOSTILE = '\'; DROP TABLE chunks; -- title:"x" (a OR b) +c -d 🚀'


def test_pg_search_uses_match_any_operator_and_score_with_bound_text() -> None:
    sql, params = pg_search_statement(HOSTILE, 7)
    assert "c.search_text ||| $1::text" in sql
    assert "pdb.score(c.id)" in sql
    assert re.search(r"ORDER BY pdb\.score\(c\.id\) DESC, c\.id\s+LIMIT \$2", sql)
    assert params == [HOSTILE, 7]
    # User text is bound, never part of the statement; no query-parser entry points are used.
    assert "DROP" not in sql and "🚀" not in sql
    for parser_entry in ("@@@", "pdb.parse", "paradedb."):
        assert parser_entry not in sql


def test_pg_search_filters_are_bound_parameters_before_limit() -> None:
    doc = UUID("00000000-0000-0000-0000-000000000001")
    filters = SearchFilters(document_ids=[doc], file_types=[".PDF"], metadata={"lang": "en'--"})
    sql, params = pg_search_statement("heart attack", 5, filters)
    assert params == ["heart attack", 5, [doc], ["pdf"], {"lang": "en'--"}]
    assert "c.document_id = ANY($3::uuid[])" in sql
    assert "lower(d.file_type) = ANY($4::text[])" in sql
    assert "(d.metadata || c.metadata) @> $5::jsonb" in sql
    assert "JOIN documents d ON d.id = c.document_id" in sql
    assert sql.index("@> $5") < sql.index("LIMIT $2")
    assert "en'--" not in sql


def test_pg_search_text_is_cleaned_of_nul_and_lone_surrogates() -> None:
    _, params = pg_search_statement("a\x00b\ud800c", 3)
    assert params[0] == "a b?c"

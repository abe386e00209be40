"""`rag-server search` names a hit's chunk as the web app ("chunk 1") and `rag-server documents show`
("[chunk 1]") do: from 1. QA, 2026-12-06: the table printed the API's 0-based `chunk_index` ("0" for a
document's first chunk; "2977" for the chunk `documents show` calls "[chunk 2978]")."""

from __future__ import annotations

from uuid import uuid4

from rag_server.retrieval.cli import format_table
from rag_server.retrieval.models import SearchHit, SearchResponse


def test_the_search_table_numbers_chunks_from_one() -> None:
    hit = SearchHit(
        chunk_id=7,
        document_id=uuid4(),
        document_name="francais.md",
        chunk_index=0,
        page=None,
        text="L'élève présente sa carte.",
        score=1.0,
    )
    table = format_table(SearchResponse(query="eleve", search_type="bm25", results=[hit], timings_ms={}))
    row = table.splitlines()[1]
    assert row.split()[5] == "1", table  # #, score, vec, bm25, document, chunk

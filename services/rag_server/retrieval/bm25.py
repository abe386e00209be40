"""The BM25 leg: ParadeDB pg_search when the migration found it, else the native engine.

pg_search (ParadeDB 0.26.x, production image): one statement over the index migration 0004 builds on
(id, search_text, collection_id); see pg_search_sql. Its tokenizer stems English and folds accents
(`pdb.simple('stemmer=english', 'ascii_folding=true')`, 0027), the query's as the text's.

Native engine (migration 0002): exact Okapi BM25 over an inverted index kept in plain tables
(bm25_postings, bm25_terms, bm25_stats) by triggers on `chunks`, tokenised and stemmed by
Postgres's `english` text search configuration, over rag_bm25_text (0025: CJK as characters and pairs;
0027: Latin accents folded; 0028: URLs, addresses, paths and a number after a hyphen split into words, as
pg_search's tokenizer splits them). The query goes through the same to_tsvector, which
accepts any text, so user input never reaches a query parser. The formula, the tables and why:
docs/decisions/0003-native-bm25.md. How a native query finds its exact top k without summing every
posting: bm25_native.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from rag_server.infra.admin import get_meta
from rag_server.infra.capabilities import Bm25Engine
from rag_server.retrieval.bm25_native import native_top_k
from rag_server.retrieval.filters import FilterSQL, build_filters
from rag_server.retrieval.legs import LegHit, clean_query
from rag_server.retrieval.models import SearchFilters


def pg_search_sql(filters: FilterSQL) -> str:
    """ParadeDB pg_search 0.26.x. Parameters: $1 query text, $2 limit, filter parameters from $3.

    `|||` (match any token) runs only the index's tokenizer over $1: no query-parser syntax, so raw
    user text cannot cause a parse error. The text is always bound, never interpolated, and cast to
    text because `|||` is overloaded (text[], pdb.query, boost, fuzzy...).

    The collection scope is `c.collection_id = ANY($n::uuid[])` on the chunk row itself: collection_id
    is a field of the ParadeDB index (migration 0004), and ParadeDB pushes `=`/`ANY` over an indexed
    uuid column into the BM25 scan (https://www.paradedb.com/docs/documentation/filtering/indexed):
    the index's Top K runs over the collection's rows alone, instead of Postgres filtering every
    match the scan returns. A bound array is evaluated once when the scan starts. The other filters
    (documents join, metadata) are not in the index: Postgres checks them. Checked against what
    sqlalchemy-paradedb compiles for the same index and query: tests/unit/test_pg_search_sql.py.
    """
    return f"""
        SELECT c.id AS chunk_id, pdb.score(c.id)::float8 AS score
        FROM chunks c
        {filters.joins()}
        WHERE c.search_text ||| $1::text
        {filters.where("AND")}
        ORDER BY pdb.score(c.id) DESC, c.id
        LIMIT $2
    """


def pg_search_statement(
    query: str, top_k: int, filters: SearchFilters | None = None, collections: Sequence[UUID] | None = None
) -> tuple[str, list[Any]]:
    """The pg_search SQL and its bind parameters for one query."""
    fsql = build_filters(filters, first_param=3, collections=collections)
    return pg_search_sql(fsql), [clean_query(query), top_k, *fsql.params]


async def read_engine(conn: asyncpg.Connection) -> Bm25Engine:
    """The engine migration 0002 chose for this database (recorded in app_meta)."""
    value = await get_meta(conn, "bm25_engine")
    if value not in ("native", "pg_search"):
        raise RuntimeError(f"no BM25 engine recorded in app_meta (got {value!r}); run migrations")
    engine: Bm25Engine = value
    return engine


async def bm25_leg(
    conn: asyncpg.Connection,
    engine: Bm25Engine,
    query: str,
    top_k: int,
    filters: SearchFilters | None = None,
    k1: float = 1.2,
    b: float = 0.75,
    prune: bool = True,
    collections: Sequence[UUID] | None = None,
) -> list[LegHit]:
    """The best `top_k` chunks for `query` by BM25, best first; `collections` (None: all) restrict them.

    Native engine: the statements of bm25_native, in one read-only snapshot: `conn` is outside a
    transaction, or inside a repeatable-read one. Its statistics (N, avgdl, df) are global, over every
    collection.
    """
    if engine == "pg_search":
        rows = await conn.fetch(*pg_search_statement(query, top_k, filters, collections))
        return [LegHit(int(r["chunk_id"]), float(r["score"])) for r in rows]
    if conn.is_in_transaction():
        return await native_top_k(conn, clean_query(query), top_k, filters, k1, b, prune, collections)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await native_top_k(conn, clean_query(query), top_k, filters, k1, b, prune, collections)

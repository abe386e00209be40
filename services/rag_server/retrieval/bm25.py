"""The BM25 leg: ParadeDB pg_search when the migration found it, else the native engine.

Native engine (migration 0002): exact Okapi BM25 over an inverted index kept in plain tables
(bm25_postings, bm25_terms, bm25_stats) by triggers on `chunks`, tokenised and stemmed by
Postgres's `english` text search configuration. The query goes through the same to_tsvector, which
accepts any text, so user input never reaches a query parser.

    idf(t)      = ln(1 + (N - df + 0.5) / (df + 0.5))
    score(d, q) = sum over distinct query lexemes t in d of
                  idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * doc_len / avgdl))

Ties are broken by chunk id (ascending), so rankings are deterministic.
"""

from __future__ import annotations

from typing import Any, Literal

import asyncpg

from rag_server.retrieval.bm25_pruned import pruned_bm25
from rag_server.retrieval.filters import FilterSQL, build_filters
from rag_server.retrieval.legs import LegHit, clean_query
from rag_server.retrieval.models import SearchFilters

Bm25Engine = Literal["native", "pg_search"]


def native_bm25_sql(filters: FilterSQL) -> str:
    """Parameters: $1 query text, $2 limit, $3 k1, $4 b, then the filter parameters from $5.

    Per-term constants are computed once (MATERIALIZED) so the per-posting work is a few float8
    operations: idf * (k1 + 1) * tf / (tf + k1 * (1 - b) + k1 * b / avgdl * doc_len).
    """
    return f"""
        WITH weights AS MATERIALIZED (
            SELECT bt.term,
                   ln(1.0::float8 + (s.n_docs - bt.df + 0.5::float8) / (bt.df + 0.5::float8))
                       * ($3::float8 + 1.0::float8) AS w,
                   $3::float8 * (1.0::float8 - $4::float8) AS c0,
                   $3::float8 * $4::float8 * greatest(s.n_docs, 1)::float8
                       / greatest(s.total_len, 1)::float8 AS c1
            FROM unnest(to_tsvector('english', $1::text)) AS q
            JOIN bm25_terms bt ON bt.term = q.lexeme
            CROSS JOIN bm25_stats s
            WHERE s.id = 1 AND bt.df > 0
        )
        SELECT p.chunk_id, sum(w.w * p.tf / (p.tf + w.c0 + w.c1 * p.doc_len)) AS score
        FROM weights w
        JOIN bm25_postings p ON p.term = w.term
        {filters.joins("p.chunk_id")}
        {filters.where()}
        GROUP BY p.chunk_id
        ORDER BY score DESC, p.chunk_id
        LIMIT $2
    """


def pg_search_sql(filters: FilterSQL) -> str:
    """ParadeDB pg_search 0.25.x. Parameters: $1 query text, $2 limit, filter parameters from $3.

    `|||` (match any token) runs only the index's tokenizer over $1: no query-parser syntax, so raw
    user text cannot cause a parse error. The text is always bound, never interpolated.
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


def bm25_statement(
    engine: Bm25Engine,
    query: str,
    top_k: int,
    filters: SearchFilters | None = None,
    k1: float = 1.2,
    b: float = 0.75,
) -> tuple[str, list[Any]]:
    """The SQL and its bind parameters for one BM25 query on `engine`."""
    text = clean_query(query)
    if engine == "pg_search":
        fsql = build_filters(filters, first_param=3)
        return pg_search_sql(fsql), [text, top_k, *fsql.params]
    fsql = build_filters(filters, first_param=5)
    return native_bm25_sql(fsql), [text, top_k, float(k1), float(b), *fsql.params]


async def read_engine(conn: asyncpg.Connection) -> Bm25Engine:
    """The engine migration 0002 chose for this database (recorded in app_meta)."""
    value = await conn.fetchval("SELECT value FROM app_meta WHERE key = 'bm25_engine'")
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
) -> list[LegHit]:
    """The best `top_k` chunks for `query` by BM25, best first.

    Native engine: the pruned plan first (exact when it can prove it, see bm25_pruned), else the
    full statement, both in one snapshot.
    """
    sql, params = bm25_statement(engine, query, top_k, filters, k1, b)
    if engine == "native" and prune:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            hits = await pruned_bm25(conn, params[0], top_k, filters, k1, b)
            if hits is not None:
                return hits
            rows = await conn.fetch(sql, *params)
    else:
        rows = await conn.fetch(sql, *params)
    return [LegHit(int(r["chunk_id"]), float(r["score"])) for r in rows]

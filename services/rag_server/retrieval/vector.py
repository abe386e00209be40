"""The vector leg: cosine distance over the searched embedding generation's vectors with its HNSW index:
chunks.embedding for generation 1, chunk_vectors (a partial expression index per generation) for later
ones (rag_server.generations)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg
import numpy as np

from rag_server.infra.database import Executor
from rag_server.infra.scoped_pool import set_local
from rag_server.retrieval.filters import FilterSQL, build_filters
from rag_server.retrieval.legs import LegHit
from rag_server.retrieval.models import SearchFilters

# Generation 1's vectors live in chunks.embedding (migration 0001).
BASE_GENERATION = 1


@dataclass(frozen=True)
class VectorSpace:
    """Where one embedding generation's vectors are: its id and dimension."""

    generation_id: int = BASE_GENERATION
    dim: int | None = None


def vector_sql(
    filters: SearchFilters | None,
    collections: Sequence[UUID] | None = None,
    space: VectorSpace | None = None,
    exact_up_to: int | None = None,
) -> tuple[str, list[object]]:
    """Parameters: $1 query vector, $2 limit, then the filter parameters (collection scope first).

    ORDER BY is the distance alone: anything more and the planner cannot use the HNSW index. A later
    generation's id and dimension are literals (integers): a partial index only matches a query whose
    predicate and expression are spelled like its own.

    `exact_up_to`: the exact top k instead (ordered by a distance the index cannot give: computed in a
    subquery, or `+ 0`), and no row at all when the scope holds more chunks than this (a one-time
    filter: nothing is scanned then).
    """
    fsql = build_filters(filters, first_param=3, collections=collections)
    exact = "" if exact_up_to is None else f"AND {_scope_at_most(fsql, int(exact_up_to))}"
    if space is not None and space.generation_id != BASE_GENERATION:
        generation, dim = int(space.generation_id), int(space.dim or 0)
        distance = f"(v.embedding::vector({dim})) <=> $1"
        sql = f"""
        SELECT c.id AS chunk_id, 1 - ({distance}) AS score
        FROM chunk_vectors v JOIN chunks c ON c.id = v.chunk_id
        {fsql.joins()}
        WHERE v.generation_id = {generation} {fsql.where(prefix="AND")} {exact}
        ORDER BY {_order(distance, exact_up_to)}
        LIMIT $2
    """
        return sql, fsql.params
    if exact:
        # The distance once per row: a vector stored out of line (TOAST) is read for each use.
        sql = f"""
        SELECT chunk_id, 1 - distance AS score FROM (
            SELECT c.id AS chunk_id, c.embedding <=> $1 AS distance
            FROM chunks c
            {fsql.joins()}
            {fsql.where() or "WHERE true"} {exact}
            OFFSET 0
        ) AS scanned
        ORDER BY distance
        LIMIT $2
    """
        return sql, fsql.params
    sql = f"""
        SELECT c.id AS chunk_id, 1 - (c.embedding <=> $1) AS score
        FROM chunks c
        {fsql.joins()}
        {fsql.where()}
        ORDER BY c.embedding <=> $1
        LIMIT $2
    """
    return sql, fsql.params


def _order(distance: str, exact_up_to: int | None) -> str:
    return distance if exact_up_to is None else f"({distance}) + 0"


def _scope_at_most(fsql: FilterSQL, rows: int) -> str:
    """Whether the chunks a scan would read number at most `rows`: those of the searched collections or
    documents, counted on their index and only up to `rows` + 1 (a small collection in a large
    database is rechecked, a large one costs that count and no scan), else the whole table's estimate."""
    scope = fsql.scope("s.collection_id")
    if fsql.documents_param is not None:
        scope.append(f"s.document_id = ANY({fsql.documents_param}::uuid[])")
    if not scope:
        # reltuples is -1 before the table's first ANALYZE: a table that new is small.
        return f"(SELECT reltuples FROM pg_class WHERE oid = 'chunks'::regclass) <= {rows}"
    scoped = f"SELECT 1 FROM chunks s WHERE {' AND '.join(scope)} LIMIT {rows + 1}"
    return f"(SELECT count(*) FROM ({scoped}) AS scoped) <= {rows}"


async def exact_vector_leg(
    conn: Executor,
    embedding: np.ndarray,
    top_k: int,
    filters: SearchFilters | None = None,
    collections: Sequence[UUID] | None = None,
    *,
    space: VectorSpace | None = None,
    up_to: int,
) -> list[LegHit]:
    """The exact `top_k` nearest chunks (a scan, no index), or none when the scope (the collections, or
    the documents a filter names; else the whole table) holds more than `up_to` chunks. What an HNSW
    answer is checked against when its best is weak: a tight cluster of near-equal vectors (a log, a
    sheet of like rows) can hold the graph's search inside it, and the answer then comes from the
    cluster, far from the query (reports/hnsw-duplicates.md)."""
    sql, params = vector_sql(filters, collections, space, exact_up_to=up_to)
    rows = await conn.fetch(sql, np.asarray(embedding, dtype=np.float32), top_k, *params)
    hits = [LegHit(int(r["chunk_id"]), float(r["score"])) for r in rows if r["score"] is not None]
    hits.sort(key=lambda h: (-h.score, h.chunk_id))
    return hits


def is_weak(hits: list[LegHit], below: float) -> bool:
    """Whether an HNSW answer is checked by `exact_vector_leg`: nothing, or a best similarity under
    `below` (-1: never). A trapped answer's best is far under a true one's (reports/hnsw-duplicates.md)."""
    return below > -1 and (not hits or hits[0].score < below)


def vector_settings(top_k: int, ef_search: int, filtered: bool) -> dict[str, str]:
    """The transaction-local pgvector settings of one query."""
    # HNSW returns at most ef_search rows per scan, so it must be at least top_k (and at most 1000).
    settings = {"hnsw.ef_search": str(min(max(int(ef_search), int(top_k)), 1000))}
    if filtered:
        # pgvector 0.8: keep scanning the graph until enough rows pass the filter (a small collection
        # inside a large one would otherwise get a short list: ef_search rows, most filtered away).
        settings["hnsw.iterative_scan"] = "relaxed_order"
    return settings


async def vector_leg(
    conn: asyncpg.Connection,
    embedding: np.ndarray,
    top_k: int,
    filters: SearchFilters | None = None,
    ef_search: int = 100,
    collections: Sequence[UUID] | None = None,
    *,
    settings_applied: bool = False,
    space: VectorSpace | None = None,
) -> list[LegHit]:
    """The `top_k` nearest chunks to a unit-normalised `embedding`; score = 1 - cosine distance.
    `collections`: only chunks of these collections (None: all). `settings_applied`: the caller's
    transaction already carries `vector_settings(...)` (the scoped pool sets them with its scope).
    `space`: the generation searched (None: generation 1); `embedding` must come from its model."""
    sql, params = vector_sql(filters, collections, space)
    if settings_applied:
        rows = await conn.fetch(sql, np.asarray(embedding, dtype=np.float32), top_k, *params)
    else:
        async with conn.transaction():
            await set_local(conn, list(vector_settings(top_k, ef_search, bool(params)).items()))
            rows = await conn.fetch(sql, np.asarray(embedding, dtype=np.float32), top_k, *params)
    # A NULL score: a generation-1 vector dropped by `reembed --finalize` under a process that had not
    # yet seen the switch (for at most the generation cache's TTL).
    hits = [LegHit(int(r["chunk_id"]), float(r["score"])) for r in rows if r["score"] is not None]
    # relaxed_order may return rows slightly out of order; equal distances tie-break on id.
    hits.sort(key=lambda h: (-h.score, h.chunk_id))
    return hits

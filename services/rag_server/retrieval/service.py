"""Search over the one chunks table: vector, BM25 or both fused. The contract others code against.

    search(runtime, request) -> SearchResponse

The legs are also public (`vector_search`, `bm25_search`) so callers can ask for deep
candidate lists cheaply; they return chunk ids and scores only (`fetch_chunks` adds the rest).
In hybrid search the BM25 query starts at once, concurrently with embedding the query. A request's
reads share one connection and snapshot (its collections, the legs, the chunks): every pooled
connection costs a BEGIN, the scope's settings and a COMMIT, and round trips were the largest share of
the server's event loop at 8 clients (a write() each). Only a vector query ready while the BM25 leg
still runs (large corpora) takes a second connection, and only when one is free: a request holding a
connection never waits for another.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar
from uuid import UUID

import asyncpg
import numpy as np

from rag_server.collections.store import hybrid_alphas, resolve
from rag_server.config import Settings
from rag_server.generations.active import embed_query as generation_query
from rag_server.generations.active import searched_generation
from rag_server.generations.store import Generation
from rag_server.infra.capabilities import Bm25Engine
from rag_server.infra.database import Executor, connection
from rag_server.infra.metrics import observe_search
from rag_server.infra.runtime import Runtime
from rag_server.infra.scoped_pool import Isolation, ScopedPool, set_local
from rag_server.retrieval.bm25 import bm25_leg, read_engine
from rag_server.retrieval.filters import LegFilters
from rag_server.retrieval.fusion import (
    FusedHit,
    collection_alpha,
)
from rag_server.retrieval.highlights import highlight
from rag_server.retrieval.legs import LegHit, clean_query
from rag_server.retrieval.models import (
    LegScore,
    SearchFilters,
    SearchHit,
    SearchRequest,
    SearchResponse,
)
from rag_server.retrieval.ranking import fill_documents, is_convex, rank
from rag_server.retrieval.relevance import above_floor
from rag_server.retrieval.store import ChunkRow, fetch_chunks, holds_more_documents
from rag_server.retrieval.vector import (
    VectorSpace,
    exact_vector_leg,
    is_weak,
    vector_leg,
    vector_settings,
    vector_sql,
)

T = TypeVar("T")


async def bm25_engine(runtime: Runtime) -> Bm25Engine:
    """The engine migration 0002 chose, read once per Runtime (it is fixed for the database's life)."""
    if runtime.bm25_engine is None:
        async with runtime.pool.acquire() as conn:
            runtime.bm25_engine = await read_engine(conn)
    return runtime.bm25_engine


async def _timed(timings: dict[str, float], name: str, work: Callable[[], Awaitable[T]]) -> T:
    start = time.perf_counter()
    try:
        return await work()
    finally:
        timings[name] = round((time.perf_counter() - start) * 1000, 3)


async def embed_query(runtime: Runtime, query: str, generation: Generation | None = None) -> np.ndarray:
    """`query` embedded by the model of `generation` (None: the searched one, see generations.active)."""
    return await generation_query(runtime, generation or await searched_generation(runtime), query)


def _space(generation: Generation) -> VectorSpace:
    return VectorSpace(generation.id, generation.dim)


async def bm25_search(
    runtime: Runtime,
    query: str,
    top_k: int,
    filters: SearchFilters | None = None,
    collections: Sequence[UUID] | None = None,
    conn: Executor | None = None,
) -> list[LegHit]:
    """BM25 leg alone: the best `top_k` chunk ids with BM25 scores, best first. `collections`: resolved
    ids to restrict to (None: every collection). `conn`: where to read: a pool (default the primary's),
    or a connection inside a repeatable-read transaction."""
    engine = await bm25_engine(runtime)
    s = runtime.settings

    async def leg(c: asyncpg.Connection) -> list[LegHit]:
        return await bm25_leg(c, engine, query, top_k, filters, s.bm25_k1, s.bm25_b, collections=collections)

    if isinstance(conn, asyncpg.Connection):
        return await leg(conn)
    # The native engine reads several statements from one snapshot (bm25_leg).
    snapshot: Isolation | None = "repeatable_read" if engine == "native" else None
    async with (conn or runtime.pool).acquire(isolation=snapshot, readonly=True) as pooled:
        return await leg(pooled)


async def vector_search_embedding(
    runtime: Runtime,
    embedding: np.ndarray,
    top_k: int,
    filters: SearchFilters | None = None,
    ef_search: int | None = None,
    collections: Sequence[UUID] | None = None,
    generation: Generation | None = None,
    conn: Executor | None = None,
    settings_applied: bool = False,
) -> list[LegHit]:
    """Vector leg alone for a query embedded by `generation`'s model (None: the searched one). `conn`:
    where to read: a pool (default the primary's), or a connection inside a transaction (which keeps
    the leg's pgvector settings until it ends; `settings_applied`: it carries them already)."""
    ef = ef_search or runtime.settings.hnsw_ef_search
    space = _space(generation or await searched_generation(runtime))

    def leg_settings() -> dict[str, str]:  # built only where they are set (not on search()'s own path)
        return vector_settings(top_k, ef, bool(vector_sql(filters, collections, space)[1]))

    if isinstance(conn, asyncpg.Connection):
        if not settings_applied:
            await set_local(conn, list(leg_settings().items()))
        return await vector_leg(
            conn, embedding, top_k, filters, ef, collections, settings_applied=True, space=space
        )
    # The pgvector settings go with the scope's, in one round trip.
    async with (conn or runtime.pool).acquire(settings=leg_settings()) as pooled:
        return await vector_leg(
            pooled, embedding, top_k, filters, ef, collections, settings_applied=True, space=space
        )


async def vector_search(
    runtime: Runtime,
    query: str,
    top_k: int,
    filters: SearchFilters | None = None,
    ef_search: int | None = None,
    collections: Sequence[UUID] | None = None,
) -> list[LegHit]:
    """Vector leg alone: embeds `query`, then the `top_k` nearest chunks, best first."""
    generation = await searched_generation(runtime)  # once: the query vector and the index must match
    embedding = await embed_query(runtime, query, generation)
    return await vector_search_embedding(
        runtime, embedding, top_k, filters, ef_search, collections, generation
    )


async def hybrid_alpha(
    runtime: Runtime,
    request: SearchRequest,
    scope: Sequence[UUID],
    alphas: Sequence[float | None] | None = None,
    conn: Executor | None = None,
) -> float:
    """The convex weight of a search: the request's, else its collections' (collection_alpha).
    `alphas`: the collections' weights when the caller read them already (None: read now)."""
    if request.alpha is not None:
        return request.alpha
    if alphas is None:
        async with connection(conn or runtime.pool) as c:
            alphas = await hybrid_alphas(c, scope)
    return collection_alpha(runtime.settings.hybrid_alpha, alphas)


def leg_depth(settings: Settings, request: SearchRequest) -> int:
    """Chunks each leg returns: top_k for a leg alone, RAG_HYBRID_CANDIDATES (at least top_k) for fusion,
    for one hit per document (several chunks of one document fold into one hit) or under a floor (the
    hits below it give their places to the next ranked)."""
    if request.search_type != "hybrid" and request.group_by == "chunk" and request.min_similarity is None:
        return request.top_k
    return max(settings.hybrid_candidates, request.top_k)


def _to_hit(fused: FusedHit, row: ChunkRow) -> SearchHit:
    legs = {name: LegScore(rank=rank, score=score) for name, (rank, score) in fused.legs.items()}
    return SearchHit(
        chunk_id=row.chunk_id,
        document_id=row.document_id,
        document_name=row.document_name,
        chunk_index=row.chunk_index,
        page=row.page,
        text=row.text,
        score=fused.score,
        vector=legs.get("vector"),
        bm25=legs.get("bm25"),
        metadata=row.metadata,
        heading_path=row.heading_path,
        location=row.location,
        document_version=row.document_version,
    )


async def search(
    runtime: Runtime,
    request: SearchRequest,
    scope: Sequence[UUID] | None = None,
    pool: ScopedPool | None = None,
) -> SearchResponse:
    """Run one search request; results carry every leg's rank and score plus per-stage timings.
    The request's collections (default `default`) are resolved first: an unknown one is a NotFoundError.
    `scope`: collection ids the caller already resolved (chat does, to answer 404 before streaming).
    `pool`: where every read of it runs (`runtime.read_pool()` may pick a replica; default the primary)."""
    settings = runtime.settings
    pool = pool or runtime.pool
    timings: dict[str, float] = {}
    started = time.perf_counter()
    # NUL and lone surrogates break Postgres, the tokenizer and the JSON reply: replace them once.
    query, top_k, filters = clean_query(request.query), request.top_k, request.filters
    depth = leg_depth(settings, request)
    # What the legs read through the runtime's own pool, read before holding a connection (both are
    # cached): a request holding one connection must never wait for another.
    floor = request.min_similarity
    # The floor compares the query's vector with the chunks': a BM25 search with one embeds it too.
    embeds = request.search_type != "bm25" or floor is not None
    generation = await searched_generation(runtime) if embeds else None
    if request.search_type != "vector":
        await bm25_engine(runtime)

    async def embed() -> np.ndarray:
        # Resolved once, above: the query vector and the index searched are one generation's (a
        # switch between the two cannot pair a vector with another model's index).
        return await _timed(timings, "embed", lambda: embed_query(runtime, query, generation))

    # Alone, the vector leg (or a floor under BM25) needs no connection while the query is embedded.
    embedded = await embed() if embeds and request.search_type != "hybrid" else None
    # The vector query's pgvector settings go with the scope's when the transaction starts: one round
    # trip less when it runs on this connection. Its collection scope is always a filter here.
    ef_search = request.ef_search or settings.hnsw_ef_search
    pgvector = None if request.search_type == "bm25" else vector_settings(depth, ef_search, filtered=True)
    async with pool.acquire(isolation="repeatable_read", readonly=True, settings=pgvector) as conn:
        alphas: list[float | None] | None = None
        if scope is None:
            collections = await resolve(conn, request.collections)
            scope, alphas = [c.id for c in collections], [c.hybrid_alpha for c in collections]
        searched = scope

        async def run_vector(embedding: np.ndarray, where: Executor) -> list[LegHit]:
            return await _timed(
                timings,
                "vector",
                lambda: vector_search_embedding(
                    runtime,
                    embedding,
                    depth,
                    filters,
                    ef_search,
                    searched,
                    generation,
                    where,
                    settings_applied=where is conn,
                ),
            )

        async def run_bm25() -> list[LegHit]:
            return await _timed(
                timings, "bm25", lambda: bm25_search(runtime, query, depth, filters, searched, conn)
            )

        if request.search_type == "vector":
            assert embedded is not None
            legs = {"vector": await run_vector(embedded, conn)}
        elif request.search_type == "bm25":
            legs = {"bm25": await run_bm25()}
        else:
            # The BM25 leg starts at once on this connection while the query is embedded. The vector
            # query follows it here when it is done by then (at 100k chunks it nearly always is), else
            # runs beside it on a second connection, if one is free: a request holding one connection
            # must never wait for another (requests beyond the pool's size would wait for each other).
            bm25 = asyncio.create_task(run_bm25())
            try:
                embedding = await embed()
                if bm25.done() or not pool.has_free_connection():
                    bm25_hits = await bm25
                    vector_hits = await run_vector(embedding, conn)
                else:
                    vector_hits = await run_vector(embedding, pool)
                    bm25_hits = await bm25
            except BaseException:
                # Not to leave the leg running on this connection when the transaction ends.
                bm25.cancel()
                await asyncio.gather(bm25, return_exceptions=True)
                raise
            legs = {"vector": vector_hits, "bm25": bm25_hits}
            embedded = embedding
        if "vector" in legs and is_weak(legs["vector"], settings.vector_recheck_below):
            assert generation is not None and embedded is not None
            vector, space = embedded, _space(generation)
            exact = await _timed(
                timings,
                "vector_exact",
                lambda: exact_vector_leg(
                    conn,
                    vector,
                    depth,
                    filters,
                    searched,
                    space=space,
                    up_to=settings.vector_recheck_max_chunks,
                ),
            )
            # Nothing back: the table is beyond the bound (or the scope is empty); HNSW's answer stays.
            legs["vector"] = exact or legs["vector"]
            exact_vector = bool(exact)
        else:
            exact_vector = False

        async def read_leg(leg: str, chunks: int, excluded: Sequence[UUID]) -> list[LegHit]:
            """A leg again, as it ran (HNSW, or the exact scan that replaced it): `chunks` deep, without
            the `excluded` documents."""
            leg_filters = LegFilters.beside(filters, excluded) if excluded else filters
            if leg == "bm25":
                return await bm25_search(runtime, query, chunks, leg_filters, searched, conn)
            assert generation is not None and embedded is not None
            if exact_vector:
                up_to = settings.vector_recheck_max_chunks
                space = _space(generation)
                return await exact_vector_leg(
                    conn, embedded, chunks, leg_filters, searched, space=space, up_to=up_to
                )
            return await vector_search_embedding(
                runtime, embedded, chunks, leg_filters, ef_search, searched, generation, conn
            )

        async def holds_more(documents: int) -> bool:
            document_ids = filters.document_ids if filters is not None else None
            return await holds_more_documents(conn, searched, document_ids, documents)

        document_of = None
        if request.group_by == "document":
            document_of = await _timed(
                timings, "group", lambda: fill_documents(conn, legs, depth, top_k, read_leg, holds_more)
            )
        convex_fusion = is_convex(runtime, request, legs)
        alpha = await hybrid_alpha(runtime, request, scope, alphas, conn) if convex_fusion else None
        ranked = rank(runtime, request, legs, timings, alpha, document_of or {})
        if floor is not None and generation is not None and embedded is not None:
            floored_space = _space(generation)
            ranked = await _timed(
                timings, "floor", lambda: above_floor(conn, ranked, embedded, query, floor, floored_space)
            )
        results = await _timed(timings, "fetch", lambda: _visible_hits(conn, ranked, top_k))
        if request.highlight and results:
            hits = results
            results = await _timed(timings, "highlight", lambda: highlight(conn, query, hits))
    timings["total"] = round((time.perf_counter() - started) * 1000, 3)
    observe_search(request.search_type, timings)  # Prometheus, when an app serves this search
    return SearchResponse(query=query, search_type=request.search_type, results=results, timings_ms=timings)


async def _visible_hits(conn: asyncpg.Connection, ranked: list[FusedHit], top_k: int) -> list[SearchHit]:
    """The best `top_k` ranked chunks this snapshot sees, with their text. One that it does not (deleted
    since a leg ran, or written after this snapshot and found by a vector query on a connection of its
    own) gives its place to the next ranked."""
    hits: list[SearchHit] = []
    start = 0
    while len(hits) < top_k and start < len(ranked):
        batch = ranked[start : start + top_k - len(hits)]
        rows = await fetch_chunks(conn, [h.chunk_id for h in batch])
        hits += [_to_hit(h, rows[h.chunk_id]) for h in batch if h.chunk_id in rows]
        start += len(batch)
    return hits

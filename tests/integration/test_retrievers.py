"""LlamaIndex retrievers on chunks written by the real ingestion path (parse, chunk, embed, write)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from uuid import UUID

import asyncpg
import pytest
from asyncpg.connection import LoggedQuery
from llama_index.core.schema import MetadataMode, TextNode

from rag_server.collections.models import CreateCollection
from rag_server.collections.store import create_collection
from rag_server.config import Settings
from rag_server.infra.database import owner_connection
from rag_server.infra.embeddings import EmbeddingError
from rag_server.infra.replicas import ReplicaPool
from rag_server.infra.runtime import Runtime, open_runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from rag_server.integrations.llamaindex_retrievers import BM25Retriever, HybridRetriever, VectorRetriever
from rag_server.retrieval.fusion import FusedHit
from rag_server.retrieval.models import SearchFilters, SearchRequest
from rag_server.retrieval.service import (
    _visible_hits,
    bm25_search,
    embed_query,
    leg_depth,
    search,
    vector_search,
)
from rag_server.retrieval.vector import vector_leg, vector_settings
from tests.fakes.embedder import RecordingEmbedder
from tests.support.sample_files import pptx_bytes

ZEBRAFISH = (
    "Zebrafish regenerate cardiac muscle after injury. Cardiomyocytes near the wound dedifferentiate "
    "and proliferate, restoring the ventricle within weeks."
)
TOPICS = ["galaxies", "comets", "nebulae", "pulsars", "quasars", "exoplanets", "asteroids", "meteors"]


def astronomy_text(rng: random.Random, paragraphs: int) -> str:
    return "\n\n".join(
        " ".join(
            f"Observers catalogued {rng.choice(TOPICS)} with telescope {rng.randrange(1000)} at dusk."
            for _ in range(25)
        )
        for _ in range(paragraphs)
    )


@pytest.fixture(scope="module")
async def corpus(runtime: Runtime) -> dict[str, UUID]:
    rng = random.Random(1)
    docs = [
        DirectDocument("zebrafish.md", f"# Heart regeneration\n\n{ZEBRAFISH}\n".encode(), {"topic": "fish"}),
        DirectDocument("sky.txt", astronomy_text(rng, 12).encode(), {"topic": "space"}),
        DirectDocument("more-sky.txt", astronomy_text(rng, 3).encode(), {"topic": "space", "year": 2024}),
    ]
    ids = await ingest_documents_direct(runtime, docs)
    return {d.filename: doc_id for d, doc_id in zip(docs, ids, strict=True)}


async def test_both_legs_return_the_freshly_ingested_chunk(runtime: Runtime, corpus: dict[str, UUID]) -> None:
    chunk_id = await runtime.pool.fetchval(
        "SELECT id FROM chunks WHERE document_id = $1 ORDER BY chunk_index LIMIT 1", corpus["zebrafish.md"]
    )
    vector = await vector_search(runtime, "how do zebrafish hearts regenerate after injury", 3)
    bm25 = await bm25_search(runtime, "zebrafish heart regeneration", 3)
    assert vector[0].chunk_id == chunk_id
    assert bm25[0].chunk_id == chunk_id


@pytest.mark.parametrize("cls", [VectorRetriever, BM25Retriever, HybridRetriever])
async def test_retrievers_return_nodes_with_chunk_metadata(
    runtime: Runtime, corpus: dict[str, UUID], cls: type[VectorRetriever]
) -> None:
    nodes = await cls(runtime, top_k=4).aretrieve("zebrafish cardiomyocytes regenerate the ventricle")
    assert 1 <= len(nodes) <= 4
    top = nodes[0]
    assert isinstance(top.node, TextNode)
    assert "Zebrafish regenerate cardiac muscle" in top.node.get_content()
    meta = top.node.metadata
    assert meta["document_id"] == str(corpus["zebrafish.md"])
    assert meta["document_name"] == "zebrafish.md"
    assert meta["chunk_index"] == 0
    assert top.node.id_ == f"chunk-{meta['chunk_id']}"
    assert [n.score for n in nodes] == sorted((n.score for n in nodes), reverse=True)
    if cls is HybridRetriever:
        assert meta["vector_rank"] == 1 and meta["bm25_rank"] == 1


async def test_nodes_carry_the_chunks_headings_and_location(
    runtime: Runtime, corpus: dict[str, UUID]
) -> None:
    deck = pptx_bytes(
        [
            {"title": "Budget", "body": "Travel costs."},
            {"title": "Tardigrades", "body": "Moss piglets survive vacuum."},
        ]
    )
    [deck_id] = await ingest_documents_direct(runtime, [DirectDocument("deck.pptx", deck, {})])
    only_deck = SearchFilters(document_ids=[deck_id])
    for cls in (VectorRetriever, BM25Retriever, HybridRetriever):
        nodes = await cls(runtime, top_k=1, filters=only_deck).aretrieve("tardigrades moss piglets vacuum")
        meta = nodes[0].node.metadata
        assert (meta["heading_path"], meta["location"]) == ("Tardigrades", "slide 2"), cls
        # Where the passage is from reaches the LLM's prompt; ids and scores do not.
        prompt = nodes[0].node.get_content(metadata_mode=MetadataMode.LLM)
        assert "heading_path: Tardigrades" in prompt and "location: slide 2" in prompt, prompt
        assert "chunk_id" not in prompt, prompt
    # A Markdown chunk has its headings and no location (nothing beyond the page).
    nodes = await BM25Retriever(runtime, top_k=1).aretrieve("zebrafish cardiomyocytes")
    meta = nodes[0].node.metadata
    assert meta["heading_path"] == "Heart regeneration" and "location" not in meta


async def test_filters_apply_inside_both_legs_before_limit(runtime: Runtime, corpus: dict[str, UUID]) -> None:
    # The query matches the zebrafish document best; filtered to the sky document, each leg must
    # still fill top_k from that document (a filter after LIMIT would leave nothing).
    sky_chunks = await runtime.pool.fetchval(
        "SELECT count(*) FROM chunks WHERE document_id = $1", corpus["sky.txt"]
    )
    assert sky_chunks >= 5
    query = "zebrafish heart regeneration telescope"
    only_sky = SearchFilters(document_ids=[corpus["sky.txt"]])
    for cls in (VectorRetriever, BM25Retriever, HybridRetriever):
        nodes = await cls(runtime, top_k=5, filters=only_sky).aretrieve(query)
        assert len(nodes) == 5, cls
        assert {n.node.metadata["document_name"] for n in nodes} == {"sky.txt"}, cls

    by_type = SearchFilters(file_types=["md"])
    for cls in (VectorRetriever, BM25Retriever, HybridRetriever):
        nodes = await cls(runtime, top_k=5, filters=by_type).aretrieve("telescope comets")
        assert {n.node.metadata["document_name"] for n in nodes} <= {"zebrafish.md"}, cls

    by_meta = SearchFilters(metadata={"topic": "space", "year": 2024})
    for cls in (VectorRetriever, BM25Retriever, HybridRetriever):
        nodes = await cls(runtime, top_k=3, filters=by_meta).aretrieve("zebrafish telescope")
        assert len(nodes) == 3, cls
        assert {n.node.metadata["document_name"] for n in nodes} == {"more-sky.txt"}, cls

    nothing = SearchFilters(metadata={"year": "2024"})  # JSON types matter: "2024" is not 2024
    assert await BM25Retriever(runtime, filters=nothing).aretrieve("telescope") == []


async def test_sync_retrieve_from_another_thread(runtime: Runtime, corpus: dict[str, UUID]) -> None:
    retriever = BM25Retriever(runtime, top_k=2)
    nodes = await asyncio.to_thread(retriever.retrieve, "zebrafish")
    assert nodes[0].node.metadata["document_name"] == "zebrafish.md"
    with pytest.raises(RuntimeError, match="aretrieve"):
        retriever.retrieve("zebrafish")


async def test_hybrid_without_a_fusion_uses_the_configured_one(
    runtime: Runtime, corpus: dict[str, UUID]
) -> None:
    """RAG_FUSION, RAG_RRF_K and the per-leg weights apply when a request names no fusion."""
    configured = dataclasses.replace(
        runtime,
        settings=runtime.settings.model_copy(
            update={"fusion": "rrf", "rrf_k": 10, "hybrid_vector_weight": 0.5, "hybrid_bm25_weight": 2.0}
        ),
    )
    reply = await search(
        configured, SearchRequest(query="zebrafish heart regeneration", search_type="hybrid")
    )
    assert reply.results
    weights = {"vector": 0.5, "bm25": 2.0}
    for hit in reply.results:
        legs = {"vector": hit.vector, "bm25": hit.bm25}
        expected = sum(weights[name] / (10 + leg.rank) for name, leg in legs.items() if leg is not None)
        assert hit.score == pytest.approx(expected)
    # The shipped default is convex: the best hit of both legs scores 1 after min-max.
    default = await search(runtime, SearchRequest(query="zebrafish heart regeneration", search_type="hybrid"))
    assert default.results[0].score == pytest.approx(1.0)


async def test_vector_leg_sets_ef_search_per_query(runtime: Runtime, corpus: dict[str, UUID]) -> None:
    embedding = await embed_query(runtime, "zebrafish")
    # Outside a transaction (the scoped pool's would keep a SET LOCAL until it ends): the owner's.
    async with owner_connection(runtime.database_url) as conn:
        await conn.execute("SELECT '[1]'::vector <=> '[1]'::vector")  # loads pgvector's settings
        server_default = await conn.fetchval("SHOW hnsw.ef_search")
        settings: list[list[object]] = []
        conn.add_query_logger(lambda q: settings.append(list(q.args)) if "set_config" in q.query else None)
        await vector_leg(conn, embedding, 5, None, ef_search=321)
        await vector_leg(conn, embedding, 50, None, ef_search=10)  # raised to top_k
        await vector_leg(conn, embedding, 5, SearchFilters(metadata={"topic": "fish"}), ef_search=5000)
        # Transaction-local: the connection goes back to the pool with the server default.
        assert await conn.fetchval("SHOW hnsw.ef_search") == server_default
    # capped at pgvector's maximum; a filter adds the iterative scan
    assert settings == [
        ["hnsw.ef_search", "321"],
        ["hnsw.ef_search", "50"],
        ["hnsw.ef_search", "1000", "hnsw.iterative_scan", "relaxed_order"],
    ]


async def test_retrievers_search_the_collections_they_name(runtime: Runtime, corpus: dict[str, UUID]) -> None:
    other = await create_collection(runtime.pool, CreateCollection(name="fish-only"))
    (fish_doc,) = await ingest_documents_direct(
        runtime,
        [DirectDocument("fin.txt", f"Fin regrowth. {ZEBRAFISH}".encode(), {})],
        collection_id=other.id,
    )
    for retriever_type in (VectorRetriever, BM25Retriever, HybridRetriever):
        scoped = await retriever_type(runtime, top_k=5, collections=["fish-only"]).aretrieve(
            "zebrafish heart"
        )
        assert {n.node.metadata["document_id"] for n in scoped} == {str(fish_doc)}, retriever_type
        default = await retriever_type(runtime, top_k=5).aretrieve("zebrafish heart")
        assert str(fish_doc) not in {n.node.metadata["document_id"] for n in default}, retriever_type


async def test_the_scoped_pool_sets_pgvector_settings_with_the_scope(runtime: Runtime) -> None:
    async with runtime.pool.acquire(settings=vector_settings(5, 321, filtered=True)) as conn:
        assert await conn.fetchval("SELECT current_setting('hnsw.ef_search')") == "321"
        assert await conn.fetchval("SELECT current_setting('hnsw.iterative_scan')") == "relaxed_order"
        assert await conn.fetchval("SELECT current_setting('rag.collections')") == "*"  # the system scope


@pytest.fixture
def pool_of_one(settings: Settings) -> Settings:
    """The settings with a pool of one connection: a search that waited for a second would hang."""
    return settings.model_copy(update={"db_pool_min": 1, "db_pool_max": 1})


async def test_hybrid_searches_on_a_pool_of_one_connection_never_wait_for_themselves(
    pool_of_one: Settings, corpus: dict[str, UUID]
) -> None:
    """A search reads through one connection it holds; its vector query takes a second only when one is
    free now. On a pool of one, concurrent hybrid searches (whose instant embedding is ready while the
    BM25 leg still runs) all complete instead of each waiting for the connection it holds."""
    async with open_runtime(pool_of_one, migrate=False, embedder=RecordingEmbedder()) as rt:
        request = SearchRequest(query="zebrafish heart regeneration", top_k=3, search_type="hybrid")
        replies = await asyncio.wait_for(asyncio.gather(*(search(rt, request) for _ in range(6))), 60)
    for reply in replies:
        assert reply.results[0].document_id == corpus["zebrafish.md"]
        assert reply.results[0].bm25 is not None


def settings_calls(records: list[LoggedQuery]) -> list[dict[object, object]]:
    """The settings each `set_local` among `records` made (`set_config($1, $2, true), ...`)."""
    return [dict(zip(r.args[::2], r.args[1::2], strict=True)) for r in records if "set_config($1," in r.query]


async def test_a_search_sets_its_pgvector_settings_with_its_scope(
    pool_of_one: Settings, corpus: dict[str, UUID]
) -> None:
    """The vector query's settings (ef_search, the iterative scan of a scoped query) are set in the
    round trip that sets the scope's, and only where a vector query runs."""
    async with open_runtime(pool_of_one, migrate=False, embedder=RecordingEmbedder()) as rt:
        records: list[LoggedQuery] = []
        async with rt.pool.raw.acquire() as conn:  # the pool's one connection
            conn.add_query_logger(records.append)
        for mode in ("hybrid", "vector", "bm25"):
            records.clear()
            # ef_search 7: below the hybrid depth (50), above the vector leg's alone (top_k 3).
            request = SearchRequest(
                query="zebrafish heart regeneration", top_k=3, search_type=mode, ef_search=7
            )
            reply = await search(rt, request)
            assert reply.results, mode  # the fake embedder's vectors rank no document in particular
            pgvector = [call for call in settings_calls(records) if "hnsw.ef_search" in call]
            if mode == "bm25":
                assert pgvector == []
                continue
            [call] = pgvector
            assert "rag.collections" in call, call  # with the scope's: no round trip of its own
            expected = vector_settings(leg_depth(rt.settings, request), 7, filtered=True)
            assert {k: call[k] for k in expected} == expected
            assert expected["hnsw.ef_search"] == ("50" if mode == "hybrid" else "7")


async def test_a_vector_query_on_a_second_connection_sets_its_own_settings(
    settings: Settings, corpus: dict[str, UUID]
) -> None:
    """While the BM25 leg still runs (held by a lock here), a ready vector query takes the pool's free
    connection: its pgvector settings are set there, with the scope's."""
    # The fake embedder's answers are weak: their exact recheck, on the request's own connection,
    # would be a second vector statement there. This test is about the HNSW query's connection.
    two = settings.model_copy(update={"db_pool_min": 2, "db_pool_max": 2, "vector_recheck_below": -1})
    async with (
        open_runtime(two, migrate=False, embedder=RecordingEmbedder()) as rt,
        owner_connection(rt.database_url) as owner,
    ):
        records: list[list[LoggedQuery]] = [[], []]
        held = [await rt.pool.raw.acquire() for _ in range(2)]
        for log, conn in zip(records, held, strict=True):
            conn.add_query_logger(log.append)
        for conn in held:
            await rt.pool.raw.release(conn)
        request = SearchRequest(
            query="zebrafish heart regeneration", top_k=3, search_type="hybrid", ef_search=7
        )
        async with owner.transaction():
            await owner.execute("LOCK TABLE bm25_stats IN ACCESS EXCLUSIVE MODE")
            searching = asyncio.create_task(search(rt, request))
            for _ in range(3000):
                if any("<=>" in r.query for log in records for r in log):
                    break
                await asyncio.sleep(0.01)
            assert not searching.done()  # the BM25 leg waits for the lock; the vector query ran
        reply = await asyncio.wait_for(searching, 60)
    assert reply.results[0].document_id == corpus["zebrafish.md"]
    [vector_log] = [log for log in records if any("<=>" in r.query for r in log)]
    [bm25_log] = [log for log in records if any("bm25_terms" in r.query for r in log)]
    assert vector_log is not bm25_log
    [call] = [call for call in settings_calls(vector_log) if "hnsw.ef_search" in call]
    assert "rag.collections" in call and call["hnsw.ef_search"] == "50"


async def test_a_failed_query_embedding_stops_the_bm25_leg_and_keeps_the_connection(
    pool_of_one: Settings, corpus: dict[str, UUID]
) -> None:
    """The BM25 leg runs on the request's connection while the query is embedded: when the embedding
    fails, the leg is stopped before the transaction ends, the caller gets the embedding's error (not
    one about a busy connection), and the pool's one connection serves the next search."""
    down = EmbeddingError("The embedding service is unavailable: HTTP 503", transient=True)
    async with open_runtime(pool_of_one, migrate=False, embedder=RecordingEmbedder(failure=down)) as rt:
        hybrid = SearchRequest(query="zebrafish heart regeneration", top_k=3, search_type="hybrid")
        for _ in range(3):
            with pytest.raises(EmbeddingError):
                await search(rt, hybrid)
            # No leg left behind on a connection the search has given back.
            behind = [t for t in asyncio.all_tasks() if "search." in t.get_coro().__qualname__]
            assert behind == []
        bm25 = await search(rt, hybrid.model_copy(update={"search_type": "bm25"}))
    assert bm25.results[0].document_id == corpus["zebrafish.md"]


async def test_a_search_cancelled_during_its_bm25_leg_leaves_nothing_behind(
    pool_of_one: Settings, corpus: dict[str, UUID]
) -> None:
    """A client that disconnects cancels its search: with the BM25 leg's statement in flight on the
    request's connection and the query's embedding outstanding, the leg is stopped before the
    connection goes back, and the pool's one connection serves the next search."""
    slow = RecordingEmbedder(gate=asyncio.Event())
    hybrid = SearchRequest(query="zebrafish heart regeneration", top_k=3, search_type="hybrid")
    async with (
        open_runtime(pool_of_one, migrate=False, embedder=slow) as rt,
        owner_connection(rt.database_url) as owner,
    ):
        try:
            async with owner.transaction():
                # The leg's first statement reads bm25_stats: it waits for this lock, so it is in
                # flight when the client goes.
                await owner.execute("LOCK TABLE bm25_stats IN ACCESS EXCLUSIVE MODE")
                request = asyncio.create_task(search(rt, hybrid))
                await asyncio.wait_for(slow.asked.wait(), 30)
                for _ in range(3000):
                    if await owner.fetchval(WAITING_FOR_BM25_STATS):
                        break
                    await asyncio.sleep(0.01)
                assert await owner.fetchval(WAITING_FOR_BM25_STATS) == 1
                request.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.wait_for(request, 30)
            behind = [t for t in asyncio.all_tasks() if "search." in t.get_coro().__qualname__]
            assert behind == []
        finally:
            slow.gate.set()  # a failed assertion must not leave the search holding the pool's connection
        reply = await asyncio.wait_for(search(rt, hybrid), 30)
    assert reply.results[0].document_id == corpus["zebrafish.md"]


WAITING_FOR_BM25_STATS = """
    SELECT count(*) FROM pg_locks WHERE relation = 'bm25_stats'::regclass AND NOT granted
"""


async def test_has_free_connection_follows_the_pools_free_holders(
    runtime: Runtime, settings: Settings
) -> None:
    """ScopedPool.has_free_connection reads asyncpg's queue of free holders: true while the pool's one
    connection is idle, false while it is held, true once it is back."""
    one = settings.model_copy(update={"db_pool_min": 0, "db_pool_max": 1})
    async with open_runtime(one, migrate=False, embedder=RecordingEmbedder()) as rt:
        assert rt.pool.has_free_connection()
        async with rt.pool.acquire():
            assert not rt.pool.has_free_connection()
        assert rt.pool.has_free_connection()


async def test_a_hybrid_search_through_an_unreachable_replica_completes(
    pool_of_one: Settings, corpus: dict[str, UUID]
) -> None:
    """A replica that cannot be reached hands out the primary's connections: a hybrid search holding
    one must not wait for a second (the primary's pool has one connection here)."""
    async with open_runtime(pool_of_one, migrate=False, embedder=RecordingEmbedder()) as rt:
        nowhere = await asyncpg.create_pool("postgresql://nobody@127.0.0.1:1/none", min_size=0)
        replica = ReplicaPool(nowhere, rt.pool.default, rt.pool)
        try:
            request = SearchRequest(query="zebrafish heart regeneration", top_k=3, search_type="hybrid")
            reply = await asyncio.wait_for(search(rt, request, pool=replica), 30)
        finally:
            await nowhere.close()
    assert reply.results[0].document_id == corpus["zebrafish.md"]


async def test_a_ranked_chunk_the_snapshot_does_not_see_gives_its_place_to_the_next(
    runtime: Runtime, corpus: dict[str, UUID]
) -> None:
    """A leg may return a chunk the request's snapshot does not see (deleted since, or written after it
    and found on another connection): the results still hold top_k chunks, the next ranked."""
    ids = [r["id"] for r in await runtime.pool.fetch("SELECT id FROM chunks ORDER BY id LIMIT 4")]
    ranked = [FusedHit(10**12, 1.0), *(FusedHit(chunk_id, 0.5 - i / 10) for i, chunk_id in enumerate(ids))]
    async with runtime.pool.acquire(isolation="repeatable_read", readonly=True) as conn:
        hits = await _visible_hits(conn, ranked, 3)
    assert [h.chunk_id for h in hits] == ids[:3]

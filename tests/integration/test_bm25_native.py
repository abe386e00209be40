"""The native BM25 engine against a reference BM25 computed in Python over Postgres's own tokens
(rag_server.evaluation.bm25_reference, which the BM25 statistics study scores with too).

Tokens for the reference come from ts_debug (the parser + the english dictionaries, token by
token), counted in Python; the engine's tf/doc_len come from to_tsvector positions in the triggers.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
from collections.abc import Callable

import asyncpg
import numpy as np
import pytest

from rag_server.collections import store
from rag_server.collections.models import CreateCollection
from rag_server.evaluation.bm25_reference import Bm25Index, lexemes, token_counts
from rag_server.infra.admin import get_meta
from rag_server.infra.database import owner_connection
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from rag_server.retrieval import bm25_native
from rag_server.retrieval.bm25 import bm25_leg
from rag_server.retrieval.models import SearchFilters

WORDS = [
    "run",
    "running",
    "runs",
    "runner",
    "connect",
    "connected",
    "connection",
    "connections",
    "protein",
    "proteins",
    "cell",
    "cells",
    "cellular",
    "gene",
    "genes",
    "genetic",
    "cancer",
    "tumor",
    "tumour",
    "patient",
    "patients",
    "treatment",
    "treated",
    "treating",
    "mouse",
    "mice",
    "blood",
    "pressure",
    "heart",
    "attack",
    "risk",
    "study",
    "studies",
    "studied",
    "vitamin",
    "insulin",
    "diabetes",
    "self-driving",
    "state-of-the-art",
    "e-mail",
    "2020",
    "3.14",
    "COVID-19",
    "naïve",
    "café",
    "x-ray",
]
STOPWORDS = ["the", "a", "of", "and", "is", "was", "in", "on", "at", "by", "with", "for", "to", "from"]


def random_text(rng: random.Random, n_words: int) -> str:
    words = []
    for _ in range(n_words):
        roll = rng.random()
        if roll < 0.3:
            words.append(rng.choice(STOPWORDS))
        elif roll < 0.4:
            words.append(f"rare{rng.randrange(400)}")
        else:
            words.append(rng.choice(WORDS))
    return " ".join(words) + rng.choice([".", "!", "?", ""])


def unit_vector(rng: random.Random, dim: int) -> np.ndarray:
    v = np.array([rng.gauss(0, 1) for _ in range(dim)], dtype=np.float32)
    return v / np.linalg.norm(v)


async def insert_document(
    conn: asyncpg.Connection,
    texts: list[str],
    rng: random.Random,
    dim: int = 384,
    collection_id: uuid.UUID | None = None,
) -> tuple[uuid.UUID, list[int]]:
    """One document with one chunk per text, inserted directly (not under test here); `collection_id`
    None: the columns' default (the `default` collection)."""
    doc_id = await conn.fetchval(
        "INSERT INTO documents (filename, file_type, content_type, size_bytes, sha256, status,"
        " collection_id) VALUES ($1, 'txt', 'text/plain', 0, $2, 'ready',"
        " coalesce($3::uuid, '00000000-0000-0000-0000-000000000001')) RETURNING id",
        f"doc-{uuid.uuid4().hex[:8]}.txt",
        hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
        collection_id,
    )
    ids = []
    for i, text in enumerate(texts):
        ids.append(
            await conn.fetchval(
                "INSERT INTO chunks (document_id, chunk_index, text, search_text, embedding, collection_id) "
                "SELECT $1, $2, $3, $3, $4, collection_id FROM documents WHERE id = $1 RETURNING id",
                doc_id,
                i,
                text,
                unit_vector(rng, dim),
            )
        )
    return doc_id, ids


async def reference_scores(
    conn: asyncpg.Connection, query: str, k1: float = 1.2, b: float = 0.75
) -> dict[int, float]:
    """The reference BM25 (evaluation/bm25_reference) of every chunk, statistics over all of them."""
    rows = await conn.fetch("SELECT id, search_text FROM chunks")
    counts = await token_counts(conn, [r["search_text"] for r in rows])
    index = Bm25Index({r["id"]: c for r, c in zip(rows, counts, strict=True)})
    return index.scores(await lexemes(conn, query), index.stats(), k1, b)


async def assert_matches_reference(conn: asyncpg.Connection, query: str, k1: float, b: float) -> int:
    expected = await reference_scores(conn, query, k1, b)
    hits = await bm25_leg(conn, "native", query, 10_000, None, k1, b)
    got = {h.chunk_id: h.score for h in hits}
    assert got.keys() == expected.keys(), query
    for chunk_id, score in expected.items():
        assert got[chunk_id] == pytest.approx(score, abs=1e-6), (query, chunk_id)
    # Ranking: score descending, chunk id ascending on ties.
    assert [(-h.score, h.chunk_id) for h in hits] == sorted((-h.score, h.chunk_id) for h in hits)
    return len(hits)


async def assert_stats_match_recount(conn: asyncpg.Connection) -> None:
    """bm25_stats, bm25_terms and bm25_postings equal a recount from the chunks table (of the text the
    triggers tokenise: rag_bm25_text, migration 0025)."""
    stats = await conn.fetchrow("SELECT n_docs, total_len FROM bm25_stats")
    recount = await conn.fetchrow(
        """
        SELECT count(*) AS n_docs, coalesce(sum(len), 0) AS total_len FROM (
            SELECT (SELECT coalesce(sum(cardinality(t.positions)), 0)
                    FROM unnest(to_tsvector('english', rag_bm25_text(c.search_text))) t) AS len
            FROM chunks c) per_chunk
        """
    )
    assert (stats["n_docs"], stats["total_len"]) == (recount["n_docs"], recount["total_len"])
    terms = {r["term"]: r["df"] for r in await conn.fetch("SELECT term, df FROM bm25_terms")}
    expected_df = {
        r["lexeme"]: r["df"]
        for r in await conn.fetch(
            "SELECT t.lexeme, count(*) AS df"
            " FROM chunks c, unnest(to_tsvector('english', rag_bm25_text(c.search_text))) t GROUP BY t.lexeme"
        )
    }
    assert terms == expected_df
    mismatched = await conn.fetchval(
        """
        WITH expected AS (
            SELECT t.lexeme AS term, c.id AS chunk_id, cardinality(t.positions) AS tf,
                   sum(cardinality(t.positions)) OVER (PARTITION BY c.id) AS doc_len
            FROM chunks c, unnest(to_tsvector('english', rag_bm25_text(c.search_text))) t
        )
        SELECT count(*) FROM (
            (SELECT term, chunk_id, tf, doc_len FROM expected
             EXCEPT SELECT term, chunk_id, tf, doc_len FROM bm25_postings)
            UNION ALL
            (SELECT term, chunk_id, tf, doc_len FROM bm25_postings
             EXCEPT SELECT term, chunk_id, tf, doc_len FROM expected)
        ) diff
        """
    )
    assert mismatched == 0
    # Every posting carries its chunk's collection.
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM bm25_postings p JOIN chunks c ON c.id = p.chunk_id"
            " WHERE p.collection_id <> c.collection_id"
        )
        == 0
    )


QUERIES = [
    "running connections of proteins",
    "Heart attack risk in patients treated with insulin",
    "mice",
    "rare7 rare8 rare9 cancer",
    "self-driving x-ray café",
    "COVID-19 2020 study",
]


async def test_engine_is_native_and_reported(runtime: Runtime) -> None:
    engine = await get_meta(runtime.pool, "bm25_engine")
    assert engine == "native"


async def test_scores_equal_reference_bm25_on_hundreds_of_chunks(runtime: Runtime) -> None:
    rng = random.Random(4)
    async with runtime.pool.acquire() as conn:
        for _ in range(30):  # about 360 chunks
            texts = [random_text(rng, rng.randint(0, 60)) for _ in range(rng.randint(8, 16))]
            await insert_document(conn, texts, rng)
        assert await conn.fetchval("SELECT count(*) FROM chunks") >= 300
        matched = 0
        for query in QUERIES:
            matched += await assert_matches_reference(conn, query, 1.2, 0.75)
        assert matched > 300
        # Other parameters change the scores and still match.
        await assert_matches_reference(conn, QUERIES[1], 2.0, 0.3)
        await assert_stats_match_recount(conn)


async def test_deletes_and_updates_keep_scores_exact(runtime: Runtime) -> None:
    async with runtime.pool.acquire() as conn:
        doc_ids = [r["id"] for r in await conn.fetch("SELECT id FROM documents ORDER BY id")]
        # Whole documents (cascade to chunks) and single chunks.
        await conn.execute("DELETE FROM documents WHERE id = ANY($1::uuid[])", doc_ids[:5])
        await conn.execute("DELETE FROM chunks WHERE id IN (SELECT id FROM chunks ORDER BY id DESC LIMIT 7)")
        changed = await conn.fetchval("SELECT min(id) FROM chunks")
        await conn.execute(
            "UPDATE chunks SET search_text = $2 WHERE id = $1", changed, "mice mice mice running rare399"
        )
        await conn.execute("UPDATE chunks SET metadata = '{\"k\": 1}'")  # not indexed: no change
        for query in [*QUERIES, "rare399"]:
            await assert_matches_reference(conn, query, 1.2, 0.75)
        hits = await bm25_leg(conn, "native", "rare399", 10)
        assert changed in [h.chunk_id for h in hits]
        await assert_stats_match_recount(conn)


async def test_identical_chunks_tie_break_on_id(runtime: Runtime) -> None:
    rng = random.Random(6)
    async with runtime.pool.acquire() as conn:
        _, ids = await insert_document(conn, ["zebrafish zebrafish"] * 3, rng)
        hits = await bm25_leg(conn, "native", "zebrafish", 10)
        assert [h.chunk_id for h in hits] == ids
        assert len({h.score for h in hits}) == 1


async def test_concurrent_writers_keep_statistics_exact(runtime: Runtime) -> None:
    """Several connections insert and delete at once (multi-statement transactions too)."""

    async def writer(seed: int) -> None:
        rng = random.Random(seed)
        mine: list[uuid.UUID] = []
        async with runtime.pool.acquire() as conn:
            for step in range(12):
                async with conn.transaction():
                    doc_id, _ = await insert_document(
                        conn, [random_text(rng, rng.randint(1, 40)) for _ in range(rng.randint(1, 6))], rng
                    )
                    mine.append(doc_id)
                    if step % 3 == 2:
                        victim = mine.pop(rng.randrange(len(mine)))
                        await conn.execute("DELETE FROM documents WHERE id = $1", victim)
                if step % 4 == 3:
                    # A bulk delete of chunks by another path, outside the insert transaction. Of this
                    # writer's own documents: row locks on chunks another writer is deleting in an open
                    # transaction (which holds the bm25_stats lock) would be a deadlock by construction.
                    await conn.execute(
                        "DELETE FROM chunks WHERE id IN (SELECT id FROM chunks"
                        " WHERE document_id = ANY($1::uuid[]) ORDER BY random() LIMIT 3)",
                        mine,
                    )

    await asyncio.gather(*(writer(seed) for seed in range(4)))
    async with runtime.pool.acquire() as conn:
        await assert_stats_match_recount(conn)
        for query in QUERIES[:3]:
            await assert_matches_reference(conn, query, 1.2, 0.75)


async def test_hostile_queries_return_rows_or_nothing(runtime: Runtime) -> None:
    hostile = [
        "'; DROP TABLE chunks; --",
        'title:"mice" AND (cancer OR -risk) +x ~2 ^3 \\ | & ! <-> :*',
        "🧬🐭 mice 🚀",
        "the of and a is",
        "",
        "\x00mice\x00",
        "mice " * 2000,
    ]
    async with runtime.pool.acquire() as conn:
        for query in hostile:
            hits = await bm25_leg(conn, "native", query, 5)
            assert isinstance(hits, list)
        assert await bm25_leg(conn, "native", "the of and a is", 5) == []
        assert len(await bm25_leg(conn, "native", "🧬🐭 mice 🚀", 5)) == 5
        assert await conn.fetchval("SELECT count(*) FROM chunks") > 0


async def test_seeded_maxscore_equals_the_full_statement_bit_for_bit(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seeded MaxScore plan returns exactly what summing every posting returns: ids and scores."""
    # Thresholds sized for this small index, so the pruned statements run instead of the full one.
    monkeypatch.setattr(bm25_native, "FULL_MAX_POSTINGS", 0)
    monkeypatch.setattr(bm25_native, "SEED_POSTINGS", 40)
    rng = random.Random(7)
    async with runtime.pool.acquire() as conn:
        # Common words everywhere, rare ones in a few chunks: the shape pruning is made for.
        for _ in range(20):
            texts = [
                " ".join([rng.choice(WORDS[:12]) for _ in range(30)] + [f"rare{rng.randrange(60)}"])
                for _ in range(10)
            ]
            await insert_document(conn, texts, rng)
        statements: list[str] = []
        maxscore_used = 0
        conn.add_query_logger(lambda record: statements.append(record.query))
        queries = [f"running connection protein rare{i} rare{i + 1}" for i in range(0, 60, 3)]
        some_docs = SearchFilters(
            document_ids=[r["id"] for r in await conn.fetch("SELECT id FROM documents ORDER BY id LIMIT 12")]
        )
        # Text filters run inside the seed and the MaxScore statements too: the pruning's threshold must
        # come from the chunks the filter keeps, or a pruned search loses filtered hits.
        with_word = SearchFilters(text={"$contains": "protein"})
        without_word = SearchFilters(text={"$not_contains": "protein"})
        either = SearchFilters(text={"$or": [{"$contains": "rare3"}, {"$contains": "cells"}]})
        keeps: dict[int, Callable[[str], bool]] = {
            id(with_word): lambda text: "protein" in text,
            id(without_word): lambda text: "protein" not in text,
            id(either): lambda text: "rare3" in text or "cells" in text,
        }
        chunk_text = {r["id"]: r["text"] for r in await conn.fetch("SELECT id, text FROM chunks")}
        maxscore_with_text = kept = 0
        for query in [*queries, *QUERIES]:
            for k, filters in (
                (1, None),
                (5, None),
                (10, None),
                (50, None),
                (5, some_docs),
                (5, with_word),
                (10, without_word),
                (5, either),
            ):
                full = await bm25_leg(conn, "native", query, k, filters, prune=False)
                statements.clear()
                pruned = await bm25_leg(conn, "native", query, k, filters)
                await asyncio.sleep(0)  # asyncpg calls query loggers with loop.call_soon
                assert [(h.chunk_id, h.score) for h in pruned] == [(h.chunk_id, h.score) for h in full]
                if any("HAVING" in sql for sql in statements):
                    maxscore_used += 1
                    maxscore_with_text += id(filters) in keeps
                if id(filters) in keeps:
                    assert all(keeps[id(filters)](chunk_text[h.chunk_id]) for h in pruned), (query, filters)
                    kept += len(pruned)
        assert maxscore_used > 20
        assert maxscore_with_text > 10 and kept > 100
        await assert_matches_reference(conn, queries[0], 1.2, 0.75)


async def ensure_common_and_rare_words(conn: asyncpg.Connection) -> None:
    """At least ~200 chunks of common words with one rare word each (run alone, a test adds them)."""
    if await conn.fetchval("SELECT count(*) FROM chunks") >= 150:
        return
    rng = random.Random(11)
    for _ in range(20):
        texts = [" ".join([*rng.choices(WORDS[:12], k=30), f"rare{rng.randrange(60)}"]) for _ in range(10)]
        await insert_document(conn, texts, rng)


@pytest.mark.parametrize("lookup_cost", [0.0, 1_000.0])
async def test_every_essential_split_the_cost_model_can_choose_equals_the_full_statement(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, lookup_cost: float
) -> None:
    """Lookups free: mostly the shortest exact prefix E (many candidates); lookups dear: longer ones (or
    the full statement). Both return what summing every posting returns, bit for bit."""
    monkeypatch.setattr(bm25_native, "FULL_MAX_POSTINGS", 0)
    monkeypatch.setattr(bm25_native, "SEED_POSTINGS", 40)
    monkeypatch.setattr(bm25_native, "LOOKUP_COST", lookup_cost)
    chosen: list[tuple[int, int, int]] = []  # (E's size, shortest exact E, number of terms)
    choose = bm25_native.essential_size

    def spy(q: bm25_native.QueryTerms, theta: int) -> int:
        size = choose(q, theta)
        shortest = next((s for s in range(1, len(q.terms)) if q.bound(s) < theta - 1), len(q.terms))
        chosen.append((size, shortest, len(q.terms)))
        return size

    monkeypatch.setattr(bm25_native, "essential_size", spy)
    async with runtime.pool.acquire() as conn:
        await ensure_common_and_rare_words(conn)
        queries = [f"running connection protein cells rare{i} rare{i + 1}" for i in range(0, 60, 4)]
        for query in [*queries, *QUERIES]:
            for k in (1, 10, 30):
                full = await bm25_leg(conn, "native", query, k, prune=False)
                pruned = await bm25_leg(conn, "native", query, k)
                assert [(h.chunk_id, h.score) for h in pruned] == [(h.chunk_id, h.score) for h in full]
    if lookup_cost == 0.0:  # free lookups: mostly the shortest exact prefix
        assert sum(1 for size, shortest, n in chosen if size == shortest < n) > 10
    else:  # a longer prefix than the shortest exact one, or the full statement
        assert sum(1 for size, shortest, n in chosen if size > shortest) > 10


async def test_work_mem_is_raised_for_a_large_sum_and_restored_after(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sized here so that every statement counts as large; the caller's transaction keeps its own
    work_mem afterwards and the results are unchanged."""
    monkeypatch.setattr(bm25_native, "GROUP_BYTES", 10_000_000)
    statements: list[str] = []
    async with runtime.pool.acquire() as conn:
        await ensure_common_and_rare_words(conn)
        conn.add_query_logger(lambda record: statements.append(record.query))
        queries = ["running connection", "protein cells rare5", "connected rare9 rare10", "cell"]
        # The pool's connection is in the caller's transaction: the leg runs inside it, so a raise
        # that were not set back would still be in force below.
        assert conn.is_in_transaction()
        for query in queries:
            await conn.execute("SELECT set_config('work_mem', '5MB', true)")
            raised = await bm25_leg(conn, "native", query, 10)
            assert await conn.fetchval("SELECT current_setting('work_mem')") == "5MB"
            monkeypatch.setattr(bm25_native, "GROUP_BYTES", 0)
            plain = await bm25_leg(conn, "native", query, 10)
            monkeypatch.setattr(bm25_native, "GROUP_BYTES", 10_000_000)
            assert [(h.chunk_id, h.score) for h in raised] == [(h.chunk_id, h.score) for h in plain]
        await asyncio.sleep(0)  # asyncpg calls query loggers with loop.call_soon
        # At least once per query (the seed and the main statement may each raise it).
        assert sum(1 for sql in statements if sql == bm25_native.RAISE_WORK_MEM_SQL) >= len(queries)
        # Raised to the cap: work_mem holds it while the statement runs.
        async with conn.transaction():
            await conn.fetchval(bm25_native.RAISE_WORK_MEM_SQL, bm25_native.WORK_MEM_MAX_KB)
            assert await conn.fetchval("SELECT current_setting('work_mem')") == "64MB"


async def test_postings_carry_their_chunks_collection(runtime: Runtime) -> None:
    papers = await store.create_collection(runtime.pool, CreateCollection(name="postings-papers"))
    texts = [b"Zebrafish heart regeneration after injury.", b"Mice running on a wheel, studied twice."]
    doc_ids = await ingest_documents_direct(
        runtime, [DirectDocument(f"p{i}.txt", t, {}) for i, t in enumerate(texts)], collection_id=papers.id
    )
    async with runtime.pool.acquire() as conn:
        chunk_ids = [
            r["id"]
            for r in await conn.fetch("SELECT id FROM chunks WHERE document_id = ANY($1::uuid[])", doc_ids)
        ]
        assert chunk_ids
        collections = {
            r["collection_id"]
            for r in await conn.fetch(
                "SELECT DISTINCT collection_id FROM bm25_postings WHERE chunk_id = ANY($1::bigint[])",
                chunk_ids,
            )
        }
        assert collections == {papers.id}
        # Re-indexed text keeps its collection.
        await conn.execute("UPDATE chunks SET search_text = 'zebrafish rare398' WHERE id = $1", chunk_ids[0])
        rows = await conn.fetch("SELECT collection_id FROM bm25_postings WHERE chunk_id = $1", chunk_ids[0])
        assert [r["collection_id"] for r in rows] == [papers.id, papers.id]
        await assert_stats_match_recount(conn)


async def test_a_scope_over_two_collections_equals_the_unscoped_search_restricted_afterwards(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Statistics are global, so a scoped search is the unscoped ranking with other chunks removed:
    same ids, same scores, bit for bit; with the full statement and with the seeded MaxScore."""
    monkeypatch.setattr(bm25_native, "SEED_POSTINGS", 40)
    rng = random.Random(9)
    scope = [
        (await store.create_collection(runtime.pool, CreateCollection(name=name))).id
        for name in ("scope-a", "scope-b", "scope-out")
    ]
    async with runtime.pool.acquire() as conn:
        for i in range(24):
            texts = [
                " ".join([rng.choice(WORDS[:12]) for _ in range(20)] + [f"rare{rng.randrange(60)}"])
                for _ in range(8)
            ]
            await insert_document(conn, texts, rng, collection_id=scope[i % 3])
        inside = {
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM chunks WHERE collection_id = ANY($1::uuid[])", scope[:2]
            )
        }
        a_doc = await conn.fetchval("SELECT id FROM documents WHERE collection_id = $1 LIMIT 1", scope[0])
        out_doc = await conn.fetchval("SELECT id FROM documents WHERE collection_id = $1 LIMIT 1", scope[2])
        one_doc = SearchFilters(document_ids=[a_doc, out_doc])
        compared = 0
        for query in ["running connection protein rare3 rare4", "cells genes", *QUERIES]:
            everything = await bm25_leg(conn, "native", query, 100_000, prune=False)
            for filters in (None, one_doc):
                allowed = inside
                if filters is not None:
                    allowed = inside & {
                        r["id"]
                        for r in await conn.fetch("SELECT id FROM chunks WHERE document_id = $1", a_doc)
                    }
                restricted = [(h.chunk_id, h.score) for h in everything if h.chunk_id in allowed]
                for k in (1, 5, 50):
                    for threshold in (bm25_native.FULL_MAX_POSTINGS, 0):
                        monkeypatch.setattr(bm25_native, "FULL_MAX_POSTINGS", threshold)
                        scoped = await bm25_leg(conn, "native", query, k, filters, collections=scope[:2])
                        assert [(h.chunk_id, h.score) for h in scoped] == restricted[:k], (query, k, filters)
                        compared += len(scoped)
        assert compared > 200


async def test_truncate_empties_the_index_and_later_inserts_are_exact(runtime: Runtime) -> None:
    """Last in the module: TRUNCATE chunks resets postings, terms and statistics."""
    rng = random.Random(8)
    async with owner_connection(runtime.database_url) as conn:  # TRUNCATE is the owner's
        await conn.execute("TRUNCATE chunks CASCADE")  # chunk_vectors (later embedding generations) follow
        assert await conn.fetchval("SELECT count(*) FROM bm25_postings") == 0
        assert await conn.fetchval("SELECT count(*) FROM bm25_terms") == 0
        assert tuple(await conn.fetchrow("SELECT n_docs, total_len FROM bm25_stats")) == (0, 0)
        assert await bm25_leg(conn, "native", "mice", 5) == []
        await insert_document(conn, [random_text(rng, rng.randint(1, 40)) for _ in range(20)], rng)
        await assert_stats_match_recount(conn)
        await assert_matches_reference(conn, QUERIES[1], 1.2, 0.75)

"""The native BM25 engine's pack (migration 0014, docs/decisions/0014-packed-postings.md): a search
over the pack returns exactly what summing every posting in SQL returns (ids, scores, order), through
every change made after the pack: new chunks, deleted ones, rewritten text, a writer that drew its id
before the pack and inserted after it; a worker builds and refreshes it; chunk writers wait for it.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from rag_server.collections import store
from rag_server.collections.models import CreateCollection
from rag_server.config import Settings
from rag_server.infra.database import owner_connection
from rag_server.infra.runtime import Runtime, open_runtime
from rag_server.infra.scoped_pool import DbScope, bind_scope, reset_scope
from rag_server.ingestion import batches
from rag_server.ingestion.pipeline import incoming_file
from rag_server.retrieval import bm25_native, bm25_packed, bm25_packs
from rag_server.retrieval.bm25 import bm25_leg
from rag_server.retrieval.models import SearchFilters
from tests.conftest import create_database
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_embedding_settings
from tests.integration.test_bm25_native import QUERIES, WORDS, insert_document, random_text
from tests.support.processes import Proc, settings_env, start_worker
from tests.support.sample_files import long_text

SEARCHES = [*QUERIES, "running connection protein rare3 rare4", "cells genes cancer", "rare17"]


def common_text(rng: random.Random) -> str:
    """Common words everywhere and one rare word: many postings per term, many ties in score."""
    return " ".join([*rng.choices(WORDS[:16], k=rng.randint(3, 30)), f"rare{rng.randrange(40)}"])


async def add_documents(
    conn: asyncpg.Connection, rng: random.Random, count: int, collection: uuid.UUID
) -> None:
    for _ in range(count):
        texts = [
            common_text(rng) if rng.random() < 0.7 else random_text(rng, 12) for _ in range(rng.randint(2, 8))
        ]
        await insert_document(conn, texts, rng, collection_id=collection)


async def assert_pack_answers_like_the_full_statement(
    conn: asyncpg.Connection, scopes: list[list[uuid.UUID] | None]
) -> int:
    """Every search, scope and depth: the packed path (prune) equals every posting summed in SQL."""
    compared = 0
    for query in SEARCHES:
        for scope in scopes:
            for k in (1, 3, 10, 50, 100_000):
                full = await bm25_leg(conn, "native", query, k, prune=False, collections=scope)
                packed = await bm25_leg(conn, "native", query, k, collections=scope)
                assert [(h.chunk_id, h.score) for h in packed] == [(h.chunk_id, h.score) for h in full], (
                    query,
                    scope,
                    k,
                )
                compared += len(full)
    return compared


@pytest.fixture(scope="module")
async def collections(runtime: Runtime) -> list[uuid.UUID]:
    made = [(await store.create_collection(runtime.pool, CreateCollection(name=n))).id for n in ("pa", "pb")]
    rng = random.Random(14)
    async with runtime.pool.acquire() as conn:
        for collection in made:
            await add_documents(conn, rng, 25, collection)
    return made


async def test_the_pack_is_what_answers(runtime: Runtime, collections: list[uuid.UUID]) -> None:
    state = await bm25_packs.pack(runtime.pool)
    assert state is not None and state.watermark == await runtime.pool.fetchval("SELECT max(id) FROM chunks")
    assert state.narrow  # every id, tf and length fits: int4 and int2 entries (migration 0015)
    assert state.changed == 0 and state.packed_chunks == await runtime.pool.fetchval(
        "SELECT count(*) FROM chunks"
    )
    async with runtime.pool.acquire() as conn:
        before = await bm25_leg(conn, "native", "mice cancer", 10)
        assert before
    # Tamper with the copy, as the owner: a search that reads the pack must change; the full
    # statement over bm25_postings must not.
    async with owner_connection(runtime.database_url) as owner:
        mice = "SELECT lexeme FROM unnest(to_tsvector('english', 'mice'))"
        await owner.execute(f"DELETE FROM bm25_packed WHERE term IN ({mice})")
    async with runtime.pool.acquire() as conn:
        tampered = await bm25_leg(conn, "native", "mice cancer", 10)
        assert tampered != before
        assert await bm25_leg(conn, "native", "mice cancer", 10, prune=False) == before
    await bm25_packs.pack(runtime.pool)
    async with runtime.pool.acquire() as conn:
        assert await bm25_leg(conn, "native", "mice cancer", 10) == before


async def test_every_change_after_the_pack_is_searched_exactly(
    runtime: Runtime, collections: list[uuid.UUID]
) -> None:
    rng = random.Random(15)
    a, b = collections
    scopes: list[list[uuid.UUID] | None] = [None, [a], [b], [a, b], []]
    await bm25_packs.pack(runtime.pool)
    # Outside any transaction (each statement commits): a pack waits for every open chunk write.
    async with owner_connection(runtime.database_url) as conn:
        assert await assert_pack_answers_like_the_full_statement(conn, scopes) > 1000

        # A writer drew its chunk id before the pack and inserts after it, below the watermark (as when
        # its INSERT waited for the pack while a later writer's chunks committed before it).
        doc = await insert_document(conn, [], rng, collection_id=a)
        late_id = await conn.fetchval("SELECT nextval(pg_get_serial_sequence('chunks', 'id'))")
        await add_documents(conn, rng, 2, a)
        await bm25_packs.pack(runtime.pool)
        await conn.execute(
            "INSERT INTO chunks (id, document_id, chunk_index, text, search_text, embedding, collection_id)"
            " OVERRIDING SYSTEM VALUE SELECT $1, $2, 0, $3, $3,"
            " (SELECT embedding FROM chunks WHERE embedding IS NOT NULL LIMIT 1), collection_id"
            " FROM documents WHERE id = $2",
            late_id,
            doc[0],
            "zebrafish rare17 rare17 mice",
        )
        # New chunks above the watermark, in both collections.
        await add_documents(conn, rng, 4, a)
        await add_documents(conn, rng, 3, b)
        # Packed chunks deleted: whole documents and single chunks, among the best of a search.
        best = await bm25_leg(conn, "native", "mice cancer", 5)
        await conn.execute("DELETE FROM chunks WHERE id = ANY($1::bigint[])", [h.chunk_id for h in best[:3]])
        victims = await conn.fetch("SELECT id FROM documents WHERE collection_id = $1 ORDER BY id LIMIT 3", b)
        await conn.execute("DELETE FROM documents WHERE id = ANY($1::uuid[])", [r["id"] for r in victims])
        # A packed chunk gets new text: its packed postings are stale.
        rewritten = await conn.fetchval("SELECT min(id) FROM chunks WHERE collection_id = $1", b)
        await conn.execute(
            "UPDATE chunks SET search_text = 'rare17 rare17 rare17 gene' WHERE id = $1", rewritten
        )
        await conn.execute(
            "UPDATE chunks SET metadata = '{\"k\": 2}' WHERE id = $1", rewritten
        )  # not indexed

        state = await bm25_packs.pack_state(conn)
        assert state.unpacked == 2  # the late chunk and the rewritten one
        assert state.newer > 0 and state.changed > state.newer + state.unpacked
        assert late_id <= state.watermark and rewritten <= state.watermark  # type: ignore[operator]
        top = await bm25_leg(conn, "native", "rare17", 3, collections=[b])
        assert top[0].chunk_id == rewritten
        assert late_id in [h.chunk_id for h in await bm25_leg(conn, "native", "zebrafish rare17", 3)]
        assert await assert_pack_answers_like_the_full_statement(conn, scopes) > 1000

        # Filters other than the collection scope go to the SQL statements, over the same snapshot.
        some_docs = SearchFilters(
            document_ids=[r["id"] for r in await conn.fetch("SELECT id FROM documents ORDER BY id LIMIT 9")]
        )
        for query in SEARCHES:
            full = await bm25_leg(conn, "native", query, 10, some_docs, prune=False)
            assert await bm25_leg(conn, "native", query, 10, some_docs) == full

        # A new pack takes it all in, and nothing is left outside it.
        state = await bm25_packs.pack(runtime.pool)
        assert state is not None and (state.newer, state.unpacked, state.changed) == (0, 0, 0)
        assert await assert_pack_answers_like_the_full_statement(conn, scopes) > 1000


async def test_a_pack_waits_for_a_writer_and_writers_wait_for_it(
    runtime: Runtime, collections: list[uuid.UUID]
) -> None:
    """Chunk writers and the pack share the writers' mutex: a pack started while a writer's
    transaction is open includes its chunks once it commits; a writer started during a pack goes
    after it (then its chunks are newer than the watermark)."""
    rng = random.Random(16)
    async with runtime.pool.acquire() as writer:  # one transaction, committed at the block's end
        _, ids = await insert_document(
            writer, ["okapi okapi zebrafish"] * 2, rng, collection_id=collections[0]
        )
        packing = asyncio.create_task(bm25_packs.pack(runtime.pool))
        await asyncio.sleep(0.5)
        assert not packing.done()
    state = await packing
    assert state is not None and state.watermark is not None and state.watermark >= max(ids)
    async with runtime.pool.acquire() as conn:
        counts = await conn.fetchval(
            "SELECT length(chunk_ids) / 4 FROM bm25_packed WHERE term = 'okapi' AND collection_id = $1",
            collections[0],
        )
        assert counts == 2  # int4 ids: a narrow pack
        hits = await bm25_leg(conn, "native", "okapi", 5)
        assert sorted(h.chunk_id for h in hits) == sorted(ids)


async def both_paths(
    conn: asyncpg.Connection, query: str, k: int, scope: list[uuid.UUID] | None = None
) -> None:
    full = await bm25_leg(conn, "native", query, k, prune=False, collections=scope)
    packed = await bm25_leg(conn, "native", query, k, collections=scope)
    assert [(h.chunk_id, h.score) for h in packed] == [(h.chunk_id, h.score) for h in full], (query, k, scope)


async def test_a_writer_during_a_pack_waits_and_lands_above_the_watermark(
    runtime: Runtime, collections: list[uuid.UUID]
) -> None:
    rng = random.Random(18)
    async with (
        owner_connection(runtime.database_url) as packer,
        owner_connection(runtime.database_url) as writer,
    ):
        packing = packer.transaction()
        await packing.start()
        state = await bm25_packs.pack(packer)  # done, not committed: it holds the writers' mutex
        assert state is not None and state.watermark is not None
        inserting = asyncio.create_task(
            insert_document(writer, ["okapi gnu gnu"] * 3, rng, collection_id=collections[1])
        )
        await asyncio.sleep(0.5)
        assert not inserting.done()
        await packing.commit()
        _, ids = await inserting
        assert min(ids) > state.watermark
        assert (await bm25_packs.pack_state(writer)).newer == 3
        await both_paths(writer, "gnu okapi", 10)
        assert set(ids) <= {h.chunk_id for h in await bm25_leg(writer, "native", "gnu", 10)}


async def test_a_pack_cancelled_before_it_commits_leaves_the_previous_one(
    runtime: Runtime, collections: list[uuid.UUID]
) -> None:
    """A worker stopping cancels a pack in progress (here: waiting for the writers' mutex): the
    transaction rolls back, the previous pack stays and searches stay exact; the next pack works."""
    rng = random.Random(23)
    before = await bm25_packs.pack(runtime.pool)
    assert before is not None
    async with owner_connection(runtime.database_url) as writer:
        holding = writer.transaction()
        await holding.start()
        await insert_document(writer, ["walrus tusk walrus"] * 2, rng, collection_id=collections[0])
        packing = asyncio.create_task(bm25_packs.pack(runtime.pool))
        await asyncio.sleep(0.5)
        assert not packing.done()
        packing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await packing
        await holding.commit()
        after = await bm25_packs.pack_state(writer)
        assert (after.watermark, after.packed_at) == (before.watermark, before.packed_at)
        assert after.newer == 2
        await both_paths(writer, "walrus tusk", 10)
    again = await bm25_packs.pack(runtime.pool)
    assert again is not None and again.watermark is not None and before.watermark is not None
    assert again.watermark > before.watermark and again.newer == 0


async def test_text_rewritten_while_the_first_pack_runs_is_searched_as_written(
    pg_server: str, tmp_path: Path
) -> None:
    """The unpacked-chunk trigger fires before the postings' own (name order): it must take the
    writers' mutex before it reads the watermark, or a rewrite waiting behind the first pack is
    recorded nowhere and its old text searched."""
    rng = random.Random(19)
    settings = Settings(database_url=await create_database(pg_server), data_dir=tmp_path)
    async with open_runtime(settings, migrate=True) as runtime:  # a database never packed
        url = runtime.database_url
    async with owner_connection(url) as conn:
        _, ids = await insert_document(conn, ["alpha beta gamma", "alpha delta"], rng)
    async with owner_connection(url) as packer, owner_connection(url) as writer:
        packing = packer.transaction()
        await packing.start()
        assert await bm25_packs.pack(packer) is not None
        update = asyncio.create_task(
            writer.execute("UPDATE chunks SET search_text = 'omega omega' WHERE id = $1", ids[0])
        )
        await asyncio.sleep(0.5)
        assert not update.done()
        await packing.commit()
        await update
        assert (await bm25_packs.pack_state(writer)).unpacked == 1
        for query in ("omega", "gamma", "alpha"):
            await both_paths(writer, query, 10)
        assert [h.chunk_id for h in await bm25_leg(writer, "native", "omega", 10)] == [ids[0]]


async def test_a_chunk_of_more_than_32767_terms_makes_the_pack_wide(runtime: Runtime) -> None:
    """Chunk lengths (and tfs) are int2 in a narrow pack: one chunk too long for it, such as an imported
    document that was never chunked, makes the next pack wide, and searches stay exact either way."""
    rng = random.Random(23)
    collection = await store.create_collection(runtime.pool, CreateCollection(name="long"))
    long_text = "mice zebrafish " + " ".join(f"w{i}" for i in range(33_000))
    async with owner_connection(runtime.database_url) as conn:
        texts = [long_text, "mice cancer cells", "zebrafish mice"]
        await insert_document(conn, texts, rng, collection_id=collection.id)
        assert await conn.fetchval("SELECT max(doc_len) FROM bm25_postings") > 32_767
        state = await bm25_packs.pack(runtime.pool)
        assert state is not None and not state.narrow
        scopes: list[list[uuid.UUID] | None] = [None, [collection.id]]
        assert await assert_pack_answers_like_the_full_statement(conn, scopes) > 0
        assert [h.chunk_id for h in await bm25_leg(conn, "native", "w32999", 5)] != []
        await conn.execute("DELETE FROM chunks WHERE search_text = $1", long_text)
        state = await bm25_packs.pack(runtime.pool)
        assert state is not None and state.narrow
        assert await assert_pack_answers_like_the_full_statement(conn, scopes) > 0


async def test_a_term_whose_packed_entries_in_scope_are_all_stale(runtime: Runtime) -> None:
    rng = random.Random(20)
    a, b = [(await store.create_collection(runtime.pool, CreateCollection(name=n))).id for n in ("sa", "sb")]
    async with owner_connection(runtime.database_url) as conn:
        _, in_a = await insert_document(conn, ["quux zeta"], rng, collection_id=a)
        await insert_document(conn, ["quux eta"], rng, collection_id=b)
        await bm25_packs.pack(conn)
        await conn.execute("UPDATE chunks SET search_text = 'zeta only' WHERE id = $1", in_a[0])
        await both_paths(conn, "quux", 5, [a])
        assert await bm25_leg(conn, "native", "quux", 5, collections=[a]) == []
    token = bind_scope(DbScope(collections=(a,), role="reader"))  # the same through RLS alone
    try:
        async with runtime.pool.acquire(isolation="repeatable_read", readonly=True) as conn:
            assert await bm25_leg(conn, "native", "quux", 5) == []
    finally:
        reset_scope(token)


async def test_most_of_the_best_chunks_deleted_after_the_pack(runtime: Runtime) -> None:
    """The best k + k/4 + 10 are checked against chunks; with most of them gone, the list goes deeper."""
    rng = random.Random(21)
    async with owner_connection(runtime.database_url) as conn:
        _, ids = await insert_document(conn, ["kappa kappa lambda"] * 80 + ["kappa mu"] * 20, rng)
        await bm25_packs.pack(conn)
        await conn.execute("DELETE FROM chunks WHERE id = ANY($1::bigint[])", ids[5:75])
        for k in (1, 3, 10, 30, 50):
            await both_paths(conn, "kappa", k)
        hits = await bm25_leg(conn, "native", "kappa", 50)
        assert len(hits) == 30 and {h.chunk_id for h in hits} == set(ids[:5] + ids[75:])


async def test_searches_check_for_deleted_chunks_only_when_the_pack_counts_some(runtime: Runtime) -> None:
    """bm25_pack.deleted (migration 0016) counts packed chunks deleted since the pack, however they go
    (a chunk, a document, a collection); chunks newer than the pack do not count, a pack starts again
    at 0. While it is 0 a search makes no statement to check its best chunks against `chunks`."""
    rng = random.Random(23)
    gone = await store.create_collection(runtime.pool, CreateCollection(name="gone"))
    async with owner_connection(runtime.database_url) as conn:
        statements: list[str] = []
        conn.add_query_logger(lambda record: statements.append(record.query))

        async def checked(query: str) -> bool:
            """Whether a packed search for `query` checks its best chunks, with both paths equal."""
            statements.clear()
            await both_paths(conn, query, 10)
            return bm25_packed.LIVE_SQL in statements

        async def deleted() -> int:
            return int(await conn.fetchval("SELECT deleted FROM bm25_pack"))

        doc, ids = await insert_document(conn, ["omicron omicron"] * 6 + ["omicron pi"] * 6, rng)
        _, kept = await insert_document(conn, ["omicron tau"], rng)
        await insert_document(conn, ["omicron rho"] * 4, rng, collection_id=gone.id)
        await bm25_packs.pack(conn)
        assert await deleted() == 0 and not await checked("omicron")

        _, newer = await insert_document(conn, ["omicron sigma"] * 3, rng)
        await conn.execute("DELETE FROM chunks WHERE id = ANY($1::bigint[])", newer)
        assert await deleted() == 0 and not await checked("omicron")

        await conn.execute("DELETE FROM chunks WHERE id = ANY($1::bigint[])", ids[:2])
        assert await deleted() == 2 and await checked("omicron")
        assert "2 deleted" in (await bm25_packs.pack_state(conn)).describe()  # `rag-server pack` says so
        await conn.execute("DELETE FROM documents WHERE id = $1", doc)
        assert await deleted() == 12
        await bm25_packs.pack(conn)
        assert await deleted() == 0 and not await checked("omicron")
        await store.delete_collection(runtime.pool, runtime.queue, "gone", force=True)
        assert await deleted() == 4 and await checked("omicron")
        assert [h.chunk_id for h in await bm25_leg(conn, "native", "omicron", 10)] == kept


async def test_a_deletion_waiting_for_a_running_pack_counts_against_it(runtime: Runtime) -> None:
    """A pack holds the writers' mutex: a deletion of chunks it is packing waits, then counts against the
    new pack, so searches check their best chunks again."""
    rng = random.Random(24)
    async with owner_connection(runtime.database_url) as conn:
        _, kept = await insert_document(conn, ["xylophone keep"], rng)
        await bm25_packs.pack(conn)
        _, doomed = await insert_document(conn, ["xylophone gone"] * 2, rng)  # above that pack
    async with (
        owner_connection(runtime.database_url) as packer,
        owner_connection(runtime.database_url) as deleter,
    ):
        packing = packer.transaction()
        await packing.start()
        for statement in bm25_packs.PACK_STATEMENTS:  # the pack's first steps: it holds the mutex
            await packer.execute(statement)
        deleting = asyncio.create_task(
            deleter.execute("DELETE FROM chunks WHERE id = ANY($1::bigint[])", doomed)
        )
        await asyncio.sleep(0.5)
        assert not deleting.done()
        watermark = await packer.fetchval(bm25_packs.WATERMARK_SQL)
        assert watermark >= max(doomed)  # the new pack holds the chunks being deleted
        narrow = await bm25_packs.fill(packer, watermark)
        await packer.execute(bm25_packs.RECORD_SQL, watermark, 0.1, narrow)
        await packing.commit()
        await deleting
        assert await packer.fetchval("SELECT deleted FROM bm25_pack") == 2
        assert [h.chunk_id for h in await bm25_leg(packer, "native", "xylophone", 10)] == kept


async def test_a_delete_of_no_chunk_does_not_wait_for_a_pack(runtime: Runtime) -> None:
    """Deleting a document without chunks (a failed upload) cascades a DELETE of no chunk: it must not
    wait seconds for a running pack's mutex to count nothing."""
    rng = random.Random(25)
    async with owner_connection(runtime.database_url) as conn:
        empty, _ = await insert_document(conn, [], rng)
    async with (
        owner_connection(runtime.database_url) as packer,
        owner_connection(runtime.database_url) as other,
    ):
        async with packer.transaction():
            await packer.execute(bm25_packs.PACK_STATEMENTS[0])  # a pack holds the writers' mutex
            await other.execute("SET lock_timeout = '2s'")
            await other.execute("DELETE FROM documents WHERE id = $1", empty)
            await other.execute("DELETE FROM chunks WHERE false")
        assert await other.fetchval("SELECT count(*) FROM documents WHERE id = $1", empty) == 0


async def test_deleting_a_collection_while_a_pack_runs(runtime: Runtime) -> None:
    """The deletion locks its collection row, then waits for the writers' mutex the pack holds: the
    pack must not need that row (no foreign key from the pack to collections)."""
    rng = random.Random(22)
    doomed = await store.create_collection(runtime.pool, CreateCollection(name="doomed"))
    async with owner_connection(runtime.database_url) as conn:
        await insert_document(conn, ["doomed words here"] * 3, rng, collection_id=doomed.id)
    async with owner_connection(runtime.database_url) as packer:
        packing = packer.transaction()
        await packing.start()
        for statement in bm25_packs.PACK_STATEMENTS:  # the pack's first steps: it holds the mutex
            await packer.execute(statement)
        deleting = asyncio.create_task(
            store.delete_collection(runtime.pool, runtime.queue, "doomed", force=True)
        )
        await asyncio.sleep(0.5)
        assert not deleting.done()
        await bm25_packs.fill(packer, await packer.fetchval(bm25_packs.WATERMARK_SQL))
        await packing.commit()
        await deleting
        assert await bm25_leg(packer, "native", "doomed", 5) == []


async def test_the_pack_follows_each_keys_collections(runtime: Runtime, collections: list[uuid.UUID]) -> None:
    """Row-level security applies to the pack's rows as to the postings (test_access_database.py
    checks the tables themselves): a scope sees only its collections' chunks in a search."""
    await bm25_packs.pack(runtime.pool)
    a, b = collections
    token = bind_scope(DbScope(collections=(a,), role="reader"))
    try:
        async with runtime.pool.acquire() as conn:
            seen = {h.chunk_id for q in SEARCHES for h in await bm25_leg(conn, "native", q, 1000)}
            assert await conn.fetchval("SELECT count(DISTINCT collection_id) FROM bm25_packed") == 1
    finally:
        reset_scope(token)
    async with runtime.pool.acquire() as conn:
        in_a = {r["id"] for r in await conn.fetch("SELECT id FROM chunks WHERE collection_id = $1", a)}
        in_b = {r["id"] for r in await conn.fetch("SELECT id FROM chunks WHERE collection_id = $1", b)}
    assert seen and seen <= in_a and not seen & in_b


async def test_pack_command_reports_and_truncate_empties_the_pack(
    runtime: Runtime, settings: Settings
) -> None:
    def pack_command(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "rag_server", "pack", *args]
        return subprocess.run(
            command, env=settings_env(settings), capture_output=True, text=True, timeout=120
        )

    out = await asyncio.to_thread(pack_command)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("packed: ") and "0 chunks changed since" in out.stdout
    out = await asyncio.to_thread(pack_command, "--if-due")
    assert out.returncode == 0 and out.stdout.startswith("not packed now: "), out.stdout + out.stderr
    # --status reads the state and builds nothing (the time it was built stays).
    async with owner_connection(runtime.database_url) as owner:
        built = await owner.fetchval("SELECT packed_at FROM bm25_pack")
        out = await asyncio.to_thread(pack_command, "--status")
        state = await bm25_packs.pack_state(owner)
        assert await owner.fetchval("SELECT packed_at FROM bm25_pack") == built
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"pack: {state.describe()}; {'due' if state.due(settings) else 'not due'} now\n"
    async with owner_connection(runtime.database_url) as owner:
        await owner.execute("TRUNCATE chunks CASCADE")
        assert await owner.fetchval("SELECT count(*) FROM bm25_packed") == 0
        assert await owner.fetchval("SELECT count(*) FROM bm25_pack") == 0
        assert await bm25_leg(owner, "native", "mice", 5) == []


async def test_a_worker_packs_when_due_and_again_after_changes(
    pg_server: str, tmp_path: Path, workers: list[Proc]
) -> None:
    settings = Settings(database_url=await create_database(pg_server), data_dir=tmp_path)
    env = settings_env(settings) | {
        "RAG_BM25_PACK_MIN_CHUNKS": "40",
        "RAG_BM25_PACK_REFRESH_SHARE": "0.5",
        "RAG_BM25_PACK_INTERVAL_S": "0.2",
    }
    rng = random.Random(17)
    async with open_runtime(settings, migrate=True) as runtime:
        workers.append(start_worker(env, tmp_path / "worker.log"))

        async def packed_watermark(at_least: int, seconds: float = 90) -> int:
            for _ in range(int(seconds / 0.1)):
                watermark = await runtime.pool.fetchval("SELECT watermark FROM bm25_pack")
                if watermark is not None and watermark >= at_least:
                    return int(watermark)
                await asyncio.sleep(0.1)
            raise AssertionError((tmp_path / "worker.log").read_text()[-3000:])

        async with owner_connection(runtime.database_url) as conn:
            await insert_document(conn, [common_text(rng) for _ in range(30)], rng)
            for _ in range(900):  # the worker is checking every 0.2 s once it says it is ready
                if "worker ready" in (tmp_path / "worker.log").read_text():
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # 30 chunks: below RAG_BM25_PACK_MIN_CHUNKS, no pack
            assert await conn.fetchval("SELECT count(*) FROM bm25_pack") == 0
            # Each batch commits at once: chunk by chunk, the worker could pack midway through a batch
            # (due at 40 chunks, or at 25 changed) and leave the rest below the next bar.
            async with conn.transaction():
                _, ids = await insert_document(conn, [common_text(rng) for _ in range(20)], rng)
            first = await packed_watermark(max(ids))
            async with conn.transaction():  # 60% of 50
                _, ids = await insert_document(conn, [common_text(rng) for _ in range(30)], rng)
            assert await packed_watermark(max(ids)) > first
            for query in SEARCHES:
                full = await bm25_leg(conn, "native", query, 10, prune=False)
                assert await bm25_leg(conn, "native", query, 10) == full


async def test_a_worker_packs_right_after_writing_a_big_document(
    pg_server: str, tmp_path: Path, workers: list[Proc], fake: FakeEmbeddingServer
) -> None:
    """A document of more than UNPACKED_MAX chunks: the worker packs when it is due right after writing
    it, not at its next round (an hour away here). A pack that ran during that write's inserts (0026)
    left its chunks unpacked, each probed by every search until the next pack."""
    settings = fake_embedding_settings(await create_database(pg_server), tmp_path, fake, chunk_size=64)
    env = settings_env(settings) | {"RAG_BM25_PACK_MIN_CHUNKS": "10", "RAG_BM25_PACK_INTERVAL_S": "3600"}
    async with open_runtime(settings, migrate=True) as runtime:
        workers.append(start_worker(env, tmp_path / "worker.log"))
        batch = await batches.create_upload_batch(
            runtime.pool, runtime.queue, [incoming_file("big.txt", long_text(9000, seed=4).encode())]
        )
        [ref] = batch.tasks
        for _ in range(1200):
            status = await runtime.pool.fetchval("SELECT status FROM job_tasks WHERE id = $1", ref.task_id)
            if status == "completed":
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError((tmp_path / "worker.log").read_text()[-3000:])
        chunks = await runtime.pool.fetchval("SELECT count(*) FROM chunks")
        assert chunks > bm25_packs.UNPACKED_MAX
        for _ in range(300):
            if await runtime.pool.fetchval("SELECT chunks FROM bm25_pack") == chunks:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("no pack after the write: " + (tmp_path / "worker.log").read_text()[-2000:])


async def test_many_unpacked_chunks_are_read_by_one_join_with_the_same_answers(
    runtime: Runtime, collections: list[uuid.UUID]
) -> None:
    """Past PROBED_UNPACKED_MAX unpacked chunks (after a big write that overlapped a pack) a search reads
    them with a semi-join, not a probe each: the same answers as every posting summed, in every scope."""
    a, b = collections
    scopes: list[list[uuid.UUID] | None] = [None, [a], [b], [a, b], []]
    rng = random.Random(21)
    async with runtime.pool.acquire() as conn:  # the module's chunks may have been truncated by now
        for collection in collections:
            await add_documents(conn, rng, 25, collection)
    await bm25_packs.pack(runtime.pool)
    many = bm25_packed.PROBED_UNPACKED_MAX + 20
    async with owner_connection(runtime.database_url) as conn:
        # Rewritten texts: chunks at or below the watermark whose packed entries are stale.
        await conn.execute(
            "UPDATE chunks SET search_text = search_text || ' mice' WHERE id IN"
            " (SELECT id FROM chunks ORDER BY id LIMIT $1)",
            many,
        )
        assert await conn.fetchval("SELECT count(*) FROM bm25_unpacked") == many
        [row, *_] = await conn.fetch(bm25_native.TERMS_SQL, "mice cancer")
        assert row["packed_many_unpacked"]
        assert await assert_pack_answers_like_the_full_statement(conn, scopes) > 1000
    await bm25_packs.pack(runtime.pool)
    async with owner_connection(runtime.database_url) as conn:
        [row, *_] = await conn.fetch(bm25_native.TERMS_SQL, "mice cancer")
        assert not row["packed_many_unpacked"]

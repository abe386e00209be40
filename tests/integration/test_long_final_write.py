"""A big document's final write (chunks + document + task + message, one transaction) takes minutes: 73k
chunks took over 5 minutes. Its heartbeat waits meanwhile (for the task row the write holds), so the
message's visibility runs out; the write holds the message's row, so no worker reads it again. Most of
that time is the HNSW index's: the writers' mutex (the bm25_stats row) is taken only for the BM25 work at
the end (migration 0026), so other documents' writes, deletes and the pack go on meanwhile."""

from __future__ import annotations

import asyncio

import asyncpg
import numpy as np
import pytest

from rag_server.infra.database import owner_connection
from rag_server.infra.runtime import Runtime
from rag_server.ingestion import chunks as chunks_module
from rag_server.ingestion import tasks
from rag_server.ingestion.chunking import Chunk
from rag_server.ingestion.recovery import WorkerLease
from rag_server.retrieval import bm25_packs
from rag_server.retrieval.models import SearchRequest
from rag_server.retrieval.service import search
from tests.integration.test_bm25_native import assert_stats_match_recount
from tests.integration.test_task_ownership import message_state, queued_and_read, worker_lease
from tests.support.locks import until_waiting, waiting_on_a_lock

# The statement of a final write that takes the writers' mutex (after every chunk INSERT).
TAKES_THE_MUTEX = "SELECT bm25_defer_end"


def chunks_of(texts: list[str]) -> list[Chunk]:
    return [
        Chunk(index=i, text=t, search_text=t, page=None, char_start=0, char_end=len(t))
        for i, t in enumerate(texts)
    ]


async def test_a_message_whose_final_write_outlasts_its_visibility_is_not_read_again(
    runtime: Runtime,
) -> None:
    text = "A large document whose final write is slow."
    ref, msg = await queued_and_read(runtime, "slow-write.txt", text.encode())
    lease: WorkerLease = await worker_lease(runtime)
    try:
        read_ct, worker_id = int(msg.read_ct), lease.worker_id
        work = await tasks.start_task(runtime.pool, ref.task_id, read_ct, worker_id, msg.msg_id)
        assert work is not None
        await runtime.queue.extend(msg.msg_id, 1)  # its visibility runs out during the write
        chunk = Chunk(index=0, text=text, search_text=text, page=None, char_start=0, char_end=len(text))
        vectors = np.zeros((1, runtime.settings.embedding_dim), dtype=np.float32)
        async with owner_connection(runtime.database_url) as owner, owner.transaction():
            # The BM25 statistics row every chunk writer locks: the write waits there, as a long one runs.
            await owner.execute("SELECT 1 FROM bm25_stats FOR UPDATE")
            write = asyncio.ensure_future(
                tasks.complete_task(runtime.pool, runtime.queue, work, msg.msg_id, [chunk], vectors)
            )
            await until_waiting(runtime, TAKES_THE_MUTEX)
            for _ in range(600):
                if await message_state(runtime, msg.msg_id) == (1, True):
                    break  # visible by its timeout, still being written
                await asyncio.sleep(0.1)
            assert await runtime.queue.read(120) == []  # another slot finds nothing to take
        assert await write
        assert await message_state(runtime, msg.msg_id) is None
        status = await runtime.pool.fetchval("SELECT status FROM job_tasks WHERE id = $1", ref.task_id)
        assert status == "completed"
    finally:
        await lease.close()


async def test_a_long_final_write_finishes_its_task_when_it_ends_not_when_it_began(runtime: Runtime) -> None:
    """finished_at is when the chunks were written: the clock, not the final transaction's start."""
    text = "A document whose final write waits for the BM25 statistics."
    ref, msg = await queued_and_read(runtime, "late-finish.txt", text.encode())
    lease: WorkerLease = await worker_lease(runtime)
    try:
        work = await tasks.start_task(
            runtime.pool, ref.task_id, int(msg.read_ct), lease.worker_id, msg.msg_id
        )
        assert work is not None
        chunk = Chunk(index=0, text=text, search_text=text, page=None, char_start=0, char_end=len(text))
        vectors = np.zeros((1, runtime.settings.embedding_dim), dtype=np.float32)
        async with owner_connection(runtime.database_url) as owner:
            async with owner.transaction():
                await owner.execute("SELECT 1 FROM bm25_stats FOR UPDATE")
                write = asyncio.ensure_future(
                    tasks.complete_task(runtime.pool, runtime.queue, work, msg.msg_id, [chunk], vectors)
                )
                await until_waiting(runtime, TAKES_THE_MUTEX)
                await asyncio.sleep(1.0)
                released_at = await owner.fetchval("SELECT clock_timestamp()")
            assert await write
            finished_at = await owner.fetchval("SELECT finished_at FROM job_tasks WHERE id = $1", ref.task_id)
        assert finished_at >= released_at
    finally:
        await lease.close()


async def test_every_slice_of_a_documents_chunks_is_written_before_the_writers_mutex(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer holds bm25_stats (a pack, another document's final write): this one still writes
    all its chunks, three statements here, and waits only for the BM25 work at its end."""
    monkeypatch.setattr(chunks_module, "INSERT_BATCH_ROWS", 2)
    texts = [f"Slice {i}: the okapi grazes near the river bend number {i}." for i in range(5)]
    ref, _msg = await queued_and_read(runtime, "sliced.txt", " ".join(texts).encode())
    vectors = np.zeros((len(texts), runtime.settings.embedding_dim), dtype=np.float32)
    async with owner_connection(runtime.database_url) as owner:
        async with owner.transaction():
            await owner.execute("SELECT 1 FROM bm25_stats FOR UPDATE")
            write = asyncio.ensure_future(
                chunks_module.write_chunks(runtime.pool, ref.document_id, chunks_of(texts), vectors)
            )
            await until_waiting(runtime, TAKES_THE_MUTEX)
            assert not await waiting_on_a_lock(runtime, "INSERT INTO chunks")
        await write
        assert (
            await owner.fetchval(
                "SELECT count(*) FROM bm25_postings p JOIN chunks c ON c.id = p.chunk_id"
                " WHERE c.document_id = $1 AND p.term = 'okapi'",
                ref.document_id,
            )
            == 5
        )
        await assert_stats_match_recount(owner)


async def test_a_pack_while_a_final_write_runs_leaves_its_chunks_found(runtime: Runtime) -> None:
    """The pack does not wait for a final write's inserts any more: a pack between them and the BM25 work,
    over a later chunk of another document, sets its watermark above this document's chunks. They are
    then noted as unpacked (as the INSERT trigger did), or BM25 would never read their postings."""
    early, _ = await queued_and_read(runtime, "early.txt", b"The pangolin rolls into a ball.")
    later, _ = await queued_and_read(runtime, "later.txt", b"The tapir swims across the river.")
    vector = np.zeros((1, runtime.settings.embedding_dim), dtype=np.float32)
    async with owner_connection(runtime.database_url) as owner:
        async with owner.transaction():
            await owner.execute("SELECT 1 FROM bm25_stats FOR UPDATE")
            write = asyncio.ensure_future(
                chunks_module.write_chunks(
                    runtime.pool, early.document_id, chunks_of(["The pangolin rolls into a ball."]), vector
                )
            )
            await until_waiting(runtime, TAKES_THE_MUTEX)
            await chunks_module.write_chunks(
                owner, later.document_id, chunks_of(["The tapir swims across the river."]), vector
            )
            await bm25_packs.pack(owner)
        await write
        early_ids = [
            r["id"]
            for r in await owner.fetch("SELECT id FROM chunks WHERE document_id = $1", early.document_id)
        ]
        watermark = await owner.fetchval("SELECT watermark FROM bm25_pack")
        assert max(early_ids) <= watermark
        unpacked = {r["chunk_id"] for r in await owner.fetch("SELECT chunk_id FROM bm25_unpacked")}
        assert set(early_ids) <= unpacked
        await assert_stats_match_recount(owner)
    hits = await search(runtime, SearchRequest(query="pangolin", search_type="bm25", top_k=5))
    assert [h.document_id for h in hits.results] == [early.document_id]


async def test_a_new_versions_write_takes_the_writers_mutex_after_its_inserts_too(runtime: Runtime) -> None:
    """A replacement's write deletes the old version's chunks first: their BM25 work waits for the end as
    well (a pack covers them here: the pack's count of deleted chunks takes them, the unpacked list and
    the postings lose them), and the new version's chunks are found, the old ones not."""
    ref, _ = await queued_and_read(runtime, "versions.txt", b"The first version mentions a quokka.")
    vector = np.zeros((3, runtime.settings.embedding_dim), dtype=np.float32)
    old = [f"Version one, part {i}: the quokka smiles." for i in range(3)]
    await chunks_module.write_chunks(runtime.pool, ref.document_id, chunks_of(old), vector)
    async with owner_connection(runtime.database_url) as owner:
        await bm25_packs.pack(owner)
        deleted_before = await owner.fetchval("SELECT deleted FROM bm25_pack")
        new = [f"Version two, part {i}: the numbat digs." for i in range(2)]
        async with owner.transaction():
            await owner.execute("SELECT 1 FROM bm25_stats FOR UPDATE")
            write = asyncio.ensure_future(
                chunks_module.write_chunks(runtime.pool, ref.document_id, chunks_of(new), vector[:2])
            )
            await until_waiting(runtime, TAKES_THE_MUTEX)
        await write
        assert await owner.fetchval("SELECT deleted FROM bm25_pack") == deleted_before + 3
        await assert_stats_match_recount(owner)
    for word, found in (("numbat", 2), ("quokka", 0)):
        hits = await search(runtime, SearchRequest(query=word, search_type="bm25", top_k=5))
        assert [h.document_id for h in hits.results] == [ref.document_id] * found, word


async def test_a_write_failing_after_it_deferred_leaves_no_flag_for_the_next_write(runtime: Runtime) -> None:
    """A final write that fails midway (a bad row after the flag was set) inside a caller's transaction
    rolls back to its savepoint, the flag with it: a chunk written next in that transaction, without
    write_chunks (as the synthetic corpus does), is indexed by its triggers as before."""
    failing, _ = await queued_and_read(runtime, "fails.txt", b"A write that fails midway.")
    next_one, _ = await queued_and_read(runtime, "next.txt", b"The next write in the transaction.")
    vector = np.zeros((1, runtime.settings.embedding_dim), dtype=np.float32)
    async with runtime.pool.acquire() as conn, conn.transaction():
        with pytest.raises(asyncpg.PostgresError):  # PostgreSQL's text holds no NUL: the INSERT fails
            await chunks_module.write_chunks(conn, failing.document_id, chunks_of(["a wombat\x00"]), vector)
        assert await conn.fetchval("SELECT current_setting('rag.bm25_defer', true)") != "on"
        await chunks_module.insert_chunks(conn, [next_one.document_id], chunks_of(["a wombat digs"]), vector)
    async with owner_connection(runtime.database_url) as owner:
        await assert_stats_match_recount(owner)
    hits = await search(runtime, SearchRequest(query="wombat", search_type="bm25", top_k=5))
    assert [h.document_id for h in hits.results] == [next_one.document_id]

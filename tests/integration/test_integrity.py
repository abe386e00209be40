"""check_integrity on a healthy database, then on one broken deliberately, one way per test: each check
must name the breakage. Every breakage is made inside a transaction on the owner's connection, checked
on that same connection, and rolled back, so the tests share one healthy database. `rag-server check`
exits 1 on a committed breakage and 0 once it is repaired."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest
from llama_index.core.llms import ChatMessage

from rag_server.config import Settings
from rag_server.infra.database import owner_connection, plain_url
from rag_server.infra.runtime import Runtime
from rag_server.ingestion import tasks
from rag_server.ingestion.integrity import IntegrityReport, check_integrity
from rag_server.ingestion.pipeline import prepare_chunks
from rag_server.integrations.llamaindex_chat_store import PostgresChatStore
from rag_server.retrieval import bm25_packs
from tests.support.ingest import enqueue
from tests.support.processes import settings_env
from tests.support.sample_files import long_text


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path) -> Settings:
    # An HTTP embedder nobody calls: the vectors are made here, 8-d.
    return Settings(
        database_url=database_url,
        data_dir=data_dir,
        embedding_provider="ollama",
        embedding_model="unused",
        embedding_base_url="http://127.0.0.1:9",
        embedding_dim=8,
        chunk_size=128,
    )


@pytest.fixture(scope="module")
async def healthy(runtime: Runtime) -> dict[str, uuid.UUID]:
    """Two ready documents of several chunks (through the worker's own store calls), one failed task,
    one chat exchange."""
    refs = await enqueue(
        runtime,
        [("one.txt", long_text(400, seed=1).encode()), ("two.txt", long_text(300, seed=2).encode())],
    )
    rng = np.random.default_rng(0)
    for ref in refs:
        [msg] = await runtime.queue.read(120)
        work = await tasks.start_task(runtime.pool, ref.task_id, int(msg.read_ct), None, msg.msg_id)
        assert work is not None
        chunks = await prepare_chunks(runtime.settings, work.filename, work.content, work.file_type)
        assert len(chunks) >= 4
        vectors = rng.standard_normal((len(chunks), 8)).astype(np.float32)
        assert await tasks.complete_task(runtime.pool, runtime.queue, work, msg.msg_id, chunks, vectors)
    [bad] = await enqueue(runtime, [("bad.txt", b"x")])
    [msg] = await runtime.queue.read(120)
    assert await tasks.start_task(runtime.pool, bad.task_id, int(msg.read_ct), None, msg.msg_id)
    assert await tasks.fail_task(
        runtime.pool, runtime.queue, bad.task_id, None, bad.document_id, "Too short.", msg.msg_id
    )
    session = uuid.uuid4()
    async with owner_connection(runtime.database_url) as conn:
        await conn.execute("INSERT INTO chat_sessions (id) VALUES ($1)", session)
        # As the chat service writes a turn: a question, then its answer with the answer's metadata.
        for role, metadata in (("user", {}), ("assistant", {"answer_mode": "extractive", "sources": []})):
            await conn.execute(
                "INSERT INTO chat_messages (session_id, role, content, metadata) VALUES ($1, $2, 'x', $3)",
                session,
                role,
                metadata,
            )
        await conn.execute(
            """INSERT INTO v1_responses (id, collection_id, input, response)
               SELECT 'resp_' || repeat('0', 32), collection_id, '[]', '{}' FROM documents LIMIT 1"""
        )
    assert refs[0].document_id and refs[1].document_id
    return {"doc": refs[0].document_id, "task": refs[0].task_id, "failed": bad.task_id, "session": session}


@asynccontextmanager
async def broken(runtime: Runtime) -> AsyncIterator[asyncpg.Connection]:
    """The owner's connection inside a transaction that is rolled back afterwards."""
    async with owner_connection(runtime.database_url) as conn:
        tr = conn.transaction()
        await tr.start()
        try:
            yield conn
        finally:
            await tr.rollback()


async def check(conn: asyncpg.Connection, runtime: Runtime, quiescent: bool = True) -> IntegrityReport:
    return await check_integrity(conn, runtime.settings.queue_name, quiescent=quiescent)


def checks(report: IntegrityReport) -> set[str]:
    return {v.check for v in report.violations}


async def test_a_healthy_database_passes(runtime: Runtime, healthy: dict[str, uuid.UUID]) -> None:
    report = await check_integrity(runtime.pool, runtime.settings.queue_name, quiescent=True)
    assert report.ok, report.lines()
    assert report.counts["documents"] == 3 and report.counts["chunks"] >= 8
    assert report.counts["chat messages"] == 2 and report.counts["queue messages"] == 0
    assert report.counts["stored responses"] == 1
    assert report.lines()[-1] == "integrity: OK"


async def test_a_chunk_deleted_in_the_middle(runtime: Runtime, healthy: dict[str, uuid.UUID]) -> None:
    async with broken(runtime) as conn:
        await conn.execute("DELETE FROM chunks WHERE document_id = $1 AND chunk_index = 2", healthy["doc"])
        report = await check(conn, runtime)
    assert "chunk indexes" in checks(report)
    assert any(str(healthy["doc"]) in v.detail for v in report.violations)


async def test_a_gap_even_when_chunk_count_agrees(runtime: Runtime, healthy: dict[str, uuid.UUID]) -> None:
    async with broken(runtime) as conn:
        await conn.execute("DELETE FROM chunks WHERE document_id = $1 AND chunk_index = 1", healthy["doc"])
        await conn.execute("UPDATE documents SET chunk_count = chunk_count - 1 WHERE id = $1", healthy["doc"])
        report = await check(conn, runtime)
    assert checks(report) >= {"chunk indexes", "completed task"}


async def test_a_duplicated_chunk_index(runtime: Runtime, healthy: dict[str, uuid.UUID]) -> None:
    async with broken(runtime) as conn:
        # The unique constraint forbids it; a restore without constraints or a bug in one could not.
        await conn.execute("ALTER TABLE chunks DROP CONSTRAINT chunks_document_id_chunk_index_key")
        last = await conn.fetchval(
            "SELECT max(chunk_index) FROM chunks WHERE document_id = $1", healthy["doc"]
        )
        await conn.execute(
            "UPDATE chunks SET chunk_index = 0 WHERE document_id = $1 AND chunk_index = $2",
            healthy["doc"],
            last,
        )
        report = await check(conn, runtime)
    assert checks(report) == {"chunk indexes"}


async def test_a_chunk_missing_a_vector_of_a_later_embedding_generation(
    runtime: Runtime, healthy: dict[str, uuid.UUID]
) -> None:
    report = await check_integrity(runtime.pool, runtime.settings.queue_name, quiescent=True)
    assert "skipped: vectors per embedding generation (only generation 1 exists)" in report.lines()
    async with broken(runtime) as conn:
        # A switch to generation 2 (every chunk has its vector) with generation 3 still building (none).
        await conn.execute("UPDATE embedding_generations SET state = 'retired' WHERE id = 1")
        await conn.execute(
            "INSERT INTO embedding_generations (id, provider, model, dim, state)"
            " VALUES (2, 'openai', 'm2', 4, 'active'), (3, 'openai', 'm3', 4, 'building')"
        )
        await conn.execute(
            "INSERT INTO chunk_vectors (chunk_id, generation_id, embedding)"
            " SELECT id, 2, '[1,0,0,0]'::vector FROM chunks"
        )
        assert (await check(conn, runtime)).ok
        victim = await conn.fetchval(
            "SELECT min(id) FROM chunks WHERE document_id = $1 AND chunk_index = 1", healthy["doc"]
        )
        await conn.execute("DELETE FROM chunk_vectors WHERE generation_id = 2 AND chunk_id = $1", victim)
        report = await check(conn, runtime)
        assert checks(report) == {"missing vectors"}
        [violation] = report.violations
        assert str(healthy["doc"]) in violation.detail
        assert "1 chunk(s) without a vector of embedding generation 2 (active)" in violation.detail
        # The retired generation 1 must stay complete too (a rollback searches it again).
        await conn.execute("UPDATE chunks SET embedding = NULL WHERE id = $1", victim)
        details = [v.detail for v in (await check(conn, runtime)).violations]
        assert any("generation 1 (retired)" in d for d in details), details


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("UPDATE bm25_stats SET n_docs = n_docs + 1", "bm25 stats"),
        ("UPDATE bm25_stats SET total_len = total_len - 1", "bm25 stats"),
        ("UPDATE bm25_terms SET df = df + 1 WHERE term = (SELECT min(term) FROM bm25_terms)", "bm25 terms"),
        (
            "DELETE FROM bm25_postings"
            " WHERE (term, chunk_id) = (SELECT term, chunk_id FROM bm25_postings LIMIT 1)",
            "bm25 postings",
        ),
        (
            "UPDATE bm25_postings SET tf = tf + 1 WHERE chunk_id = (SELECT min(id) FROM chunks)",
            "bm25 postings",
        ),
    ],
)
async def test_bm25_statistics_differ_from_a_recount(
    runtime: Runtime, healthy: dict[str, uuid.UUID], sql: str, expected: str
) -> None:
    async with broken(runtime) as conn:
        await conn.execute(sql)
        report = await check(conn, runtime)
    assert expected in checks(report)
    assert checks(report) <= {"bm25 stats", "bm25 terms", "bm25 postings"}


async def test_each_wrong_posting_is_named_as_extra_or_missing(
    runtime: Runtime, healthy: dict[str, uuid.UUID]
) -> None:
    async with broken(runtime) as conn:
        chunk = await conn.fetchrow(
            "SELECT p.term, p.chunk_id, p.tf, p.doc_len FROM bm25_postings p"
            " WHERE p.chunk_id = (SELECT min(id) FROM chunks) ORDER BY p.term LIMIT 1"
        )
        # A posting of a word the chunk does not hold; another with a wrong tf: listed as both.
        await conn.execute(
            "INSERT INTO bm25_postings (term, chunk_id, tf, doc_len, collection_id)"
            " SELECT 'zzzq', id, 1, $2, collection_id FROM chunks WHERE id = $1",
            chunk["chunk_id"],
            chunk["doc_len"],
        )
        await conn.execute(
            "UPDATE bm25_postings SET tf = tf + 1 WHERE term = $1 AND chunk_id = $2",
            chunk["term"],
            chunk["chunk_id"],
        )
        report = await check(conn, runtime)
    where, tf, doc_len = f"chunk {chunk['chunk_id']}", chunk["tf"], chunk["doc_len"]
    assert sorted(v.detail for v in report.violations) == sorted(
        [
            f"extra posting: term 'zzzq', {where}, tf 1, doc_len {doc_len}",
            f"extra posting: term '{chunk['term']}', {where}, tf {tf + 1}, doc_len {doc_len}",
            f"missing posting: term '{chunk['term']}', {where}, tf {tf}, doc_len {doc_len}",
        ]
    )
    assert checks(report) == {"bm25 postings"}


async def test_a_term_missing_or_extra_in_bm25_terms(runtime: Runtime, healthy: dict[str, uuid.UUID]) -> None:
    async with broken(runtime) as conn:
        term, df = await conn.fetchrow("SELECT term, df FROM bm25_terms ORDER BY term LIMIT 1")
        await conn.execute("DELETE FROM bm25_terms WHERE term = $1", term)
        await conn.execute("INSERT INTO bm25_terms (term, df) VALUES ('zzzq', 2)")
        report = await check(conn, runtime)
    assert sorted(v.detail for v in report.violations) == [
        f"term '{term}': df missing, recount {df}",
        "term 'zzzq': df 2, recount none",
    ]
    assert checks(report) == {"bm25 terms"}


async def test_chunks_of_a_document_that_is_not_ready(
    runtime: Runtime, healthy: dict[str, uuid.UUID]
) -> None:
    async with broken(runtime) as conn:
        await conn.execute("UPDATE documents SET status = 'failed' WHERE id = $1", healthy["doc"])
        report = await check(conn, runtime)
    unready = [v.detail for v in report.violations if v.check == "chunks of unready document"]
    assert unready == [f"document {healthy['doc']} is failed but has chunks"]


async def test_an_entry_packed_twice_is_listed_once(runtime: Runtime, healthy: dict[str, uuid.UUID]) -> None:
    async with broken(runtime) as conn:
        assert await bm25_packs.pack(conn) is not None
        term = await conn.fetchval("SELECT max(term) FROM bm25_packed")
        chunk_id, tf, doc_len = await conn.fetchrow(
            "SELECT chunk_id, tf, doc_len FROM bm25_postings WHERE term = $1 ORDER BY chunk_id DESC LIMIT 1",
            term,
        )
        # Its last entry (narrow: 4-byte id, 2-byte tf and length) once more at the end of the lists.
        await conn.execute(
            "UPDATE bm25_packed SET chunk_ids = chunk_ids || substring(chunk_ids FROM length(chunk_ids) - 3),"
            " tfs = tfs || substring(tfs FROM length(tfs) - 1),"
            " lens = lens || substring(lens FROM length(lens) - 1)"
            " WHERE term = $1",
            term,
        )
        report = await check(conn, runtime)
    assert [(v.check, v.detail) for v in report.violations] == [
        (
            "bm25 pack",
            f"wrong entry in the BM25 pack: term '{term}', chunk {chunk_id}, tf {tf}, doc_len {doc_len}",
        )
    ]


async def test_a_wide_bm25_pack_is_read_as_well(runtime: Runtime, healthy: dict[str, uuid.UUID]) -> None:
    """A wide pack (int8 ids, int4 values: a chunk of more than 32,767 terms) is decoded as such."""
    async with broken(runtime) as conn:
        assert await bm25_packs.pack(conn) is not None
        watermark = await conn.fetchval("SELECT watermark FROM bm25_pack")
        await conn.execute("DELETE FROM bm25_packed")
        await conn.execute(bm25_packs.fill_sql(False), watermark)
        await conn.execute("UPDATE bm25_pack SET narrow = false")
        assert (await check(conn, runtime)).ok, (await check(conn, runtime)).lines()
        # The last entry of a term's list: tf 99 (int4) where the postings say otherwise.
        term = await conn.fetchval("SELECT max(term) FROM bm25_packed")
        await conn.execute(
            "UPDATE bm25_packed SET tfs = overlay(tfs PLACING '\\x00000063'::bytea FROM length(tfs) - 3)"
            " WHERE term = $1",
            term,
        )
        report = await check(conn, runtime)
    assert checks(report) == {"bm25 pack"}
    wrong = [v.detail for v in report.violations if v.detail.startswith("wrong")]
    assert len(wrong) == 1 and f"term '{term}'" in wrong[0] and ", tf 99, " in wrong[0]


async def test_the_bm25_pack_must_hold_what_the_postings_hold(
    runtime: Runtime, healthy: dict[str, uuid.UUID]
) -> None:
    async with broken(runtime) as conn:
        assert await bm25_packs.pack(conn) is not None
        assert (await check(conn, runtime)).ok
        # Written again after the pack: read from bm25_postings, its packed entries ignored.
        await conn.execute(
            "UPDATE chunks SET search_text = 'rewritten text' WHERE id = (SELECT min(id) FROM chunks)"
        )
        assert (await check(conn, runtime)).ok, (await check(conn, runtime)).lines()
        # The last entry of a term's packed list gets another tf (int2: a narrow pack).
        assert await conn.fetchval("SELECT narrow FROM bm25_pack")
        await conn.execute(
            "UPDATE bm25_packed SET tfs = overlay(tfs PLACING '\\x0063'::bytea FROM length(tfs) - 1)"
            " WHERE term = (SELECT max(term) FROM bm25_packed)"
        )
        report = await check(conn, runtime)
    assert checks(report) == {"bm25 pack"}
    assert {v.detail.split(":")[0] for v in report.violations} == {
        "wrong entry in the BM25 pack",
        "missing entry in the BM25 pack",
    }


async def test_a_deleted_chunk_the_pack_does_not_count(
    runtime: Runtime, healthy: dict[str, uuid.UUID]
) -> None:
    """Searches skip checking packed chunks against `chunks` while bm25_pack counts none deleted
    (migration 0016): a deletion that count missed would let them return a deleted chunk."""
    async with broken(runtime) as conn:
        assert await bm25_packs.pack(conn) is not None
        await conn.execute("DELETE FROM documents WHERE id = $1", healthy["doc"])
        assert await conn.fetchval("SELECT deleted FROM bm25_pack") > 0
        assert (await check(conn, runtime)).ok, (await check(conn, runtime)).lines()
        assert await bm25_packs.pack(conn) is not None
        assert await conn.fetchval("SELECT deleted FROM bm25_pack") == 0
        await conn.execute("ALTER TABLE chunks DISABLE TRIGGER chunks_bm25_pack_deleted")
        await conn.execute("DELETE FROM chunks WHERE id = (SELECT max(id) FROM chunks)")
        report = await check(conn, runtime)
    assert "bm25 pack" in checks(report)
    pack_problems = {v.detail.split(":")[0] for v in report.violations if v.check == "bm25 pack"}
    assert pack_problems - {"... and more (first 20 shown)"} == {"uncounted deleted entry in the BM25 pack"}


async def test_orphan_messages(runtime: Runtime, healthy: dict[str, uuid.UUID]) -> None:
    queue = runtime.settings.queue_name
    async with broken(runtime) as conn:
        for task_id in (healthy["task"], uuid.uuid4()):  # a completed task's, a missing task's
            await conn.execute("SELECT pgmq.send($1, $2::jsonb)", queue, f'{{"task_id": "{task_id}"}}')
        # A re-embed's backfill message has no task and is no orphan (rag_server.generations).
        await conn.execute(
            "SELECT pgmq.send($1, $2::jsonb)",
            queue,
            '{"kind": "reembed", "generation": 2, "first": 1, "last": 9}',
        )
        report = await check(conn, runtime)
        live = await check(conn, runtime, quiescent=False)
    orphans = [v.detail for v in report.violations if v.check == "orphan message"]
    assert (
        len(orphans) == 2 and any("completed" in o for o in orphans) and any("missing" in o for o in orphans)
    )
    assert live.ok, live.lines()  # just sent: a live system's workers drop such a message when they read it


async def test_a_task_processing_under_a_dead_worker(runtime: Runtime, healthy: dict[str, uuid.UUID]) -> None:
    async with broken(runtime) as conn:
        await conn.execute("SELECT pgmq.send($1, $2::jsonb)", runtime.settings.queue_name, "{}")
        await conn.execute(
            "UPDATE job_tasks SET status = 'processing', worker_id = 987654,"
            " msg_id = (SELECT max(msg_id) FROM pgmq.q_ingest) WHERE id = $1",
            healthy["task"],
        )
        report = await check(conn, runtime, quiescent=False)
    assert "task stuck" in checks(report)
    assert any("worker 987654" in v.detail for v in report.violations)


async def test_a_queued_task_without_its_message(runtime: Runtime, healthy: dict[str, uuid.UUID]) -> None:
    async with broken(runtime) as conn:
        await conn.execute("UPDATE job_tasks SET status = 'queued' WHERE id = $1", healthy["failed"])
        report = await check(conn, runtime, quiescent=False)
    assert [v.check for v in report.violations] == ["task stuck"]


async def test_a_queued_task_with_its_message_is_fine_only_while_live(
    runtime: Runtime, healthy: dict[str, uuid.UUID]
) -> None:
    async with broken(runtime) as conn:
        msg_id = await conn.fetchval(
            "SELECT * FROM pgmq.send($1, jsonb_build_object('task_id', $2::text))",
            runtime.settings.queue_name,
            str(healthy["failed"]),
        )
        await conn.execute(
            "UPDATE job_tasks SET status = 'queued', msg_id = $2 WHERE id = $1", healthy["failed"], msg_id
        )
        await conn.execute("UPDATE documents SET status = 'queued' WHERE status = 'failed'")
        live = await check(conn, runtime, quiescent=False)
        stopped = await check(conn, runtime, quiescent=True)
    assert live.ok, live.lines()
    assert checks(stopped) == {"task unfinished"}


async def test_a_failure_without_a_reason(runtime: Runtime, healthy: dict[str, uuid.UUID]) -> None:
    async with broken(runtime) as conn:
        await conn.execute("UPDATE job_tasks SET error = '  ' WHERE id = $1", healthy["failed"])
        report = await check(conn, runtime)
    assert checks(report) == {"task without reason"}


@pytest.mark.parametrize("roles", [["user"], ["assistant"], ["user", "user", "assistant"]])
async def test_half_written_chat(runtime: Runtime, healthy: dict[str, uuid.UUID], roles: list[str]) -> None:
    async with broken(runtime) as conn:
        for role in roles:
            await conn.execute(
                "INSERT INTO chat_messages (session_id, role, content) VALUES ($1, $2, 'y')",
                healthy["session"],
                role,
            )
        report = await check(conn, runtime)
    assert checks(report) == {"half-written chat"}
    assert len(report.violations) == 1


async def test_a_llamaindex_chat_memory_waiting_for_its_answer_is_no_half_written_chat(
    runtime: Runtime, healthy: dict[str, uuid.UUID]
) -> None:
    # The chat store writes one message at a time: a question stored before its answer is normal there.
    key = str(uuid.uuid4())
    store = PostgresChatStore(runtime.pool)
    await store.async_add_message(key, ChatMessage(role="user", content="hello"))
    await store.async_add_message(
        key, ChatMessage(role="assistant", content="hi", additional_kwargs={"n": 1})
    )
    await store.async_add_message(key, ChatMessage(role="user", content="and then?"))
    try:
        async with owner_connection(runtime.database_url) as conn:
            assert (await check(conn, runtime)).ok
            # A session of the chat service is still checked, also a new one whose only turn is half-written.
            lone = uuid.uuid4()
            await conn.execute("INSERT INTO chat_sessions (id) VALUES ($1)", lone)
            await conn.execute(
                "INSERT INTO chat_messages (session_id, role, content) VALUES ($1, 'user', 'z')", lone
            )
            try:
                report = await check(conn, runtime)
                assert [(v.check, str(lone) in v.detail) for v in report.violations] == [
                    ("half-written chat", True)
                ], report.lines()
            finally:
                await conn.execute("DELETE FROM chat_sessions WHERE id = $1", lone)
    finally:
        await store.adelete_messages(key)


async def test_a_chat_memory_writing_into_a_chat_service_session_marks_it(
    runtime: Runtime, healthy: dict[str, uuid.UUID]
) -> None:
    # An app may hand the chat service's session id to a LlamaIndex memory: from then on a question may
    # wait for its answer there too.
    store = PostgresChatStore(runtime.pool)
    key = str(healthy["session"])
    await store.async_add_message(key, ChatMessage(role="user", content="and a follow-up?"))
    async with owner_connection(runtime.database_url) as conn:
        try:
            report = await check(conn, runtime)
            assert report.ok, report.lines()
        finally:
            await conn.execute(
                "DELETE FROM chat_messages WHERE session_id = $1 AND content = 'and a follow-up?'",
                healthy["session"],
            )
            await conn.execute(
                "UPDATE chat_sessions SET chat_store = false WHERE id = $1", healthy["session"]
            )


def run_check(settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rag_server", "check", "--quiescent"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_the_check_command_exits_1_on_a_violation(
    runtime: Runtime, settings: Settings, healthy: dict[str, uuid.UUID]
) -> None:
    async with owner_connection(runtime.database_url) as conn:
        await conn.execute("UPDATE bm25_stats SET n_docs = n_docs + 5")
        try:
            failed = run_check(settings)
        finally:
            await conn.execute("UPDATE bm25_stats SET n_docs = n_docs - 5")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "VIOLATION [bm25 stats]" in failed.stdout
    passed = run_check(settings)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "integrity: OK" in passed.stdout


class _HookAfterFirstStatement(asyncpg.Connection):
    """A real connection that, once its first query has answered, awaits `hook` before returning: the
    point between the check's first statement and the rest, deterministically (no timing)."""

    hook: Callable[[], Awaitable[None]] | None = None

    async def _after(self) -> None:
        hook, self.hook = self.hook, None
        if hook is not None:
            await hook()

    async def fetchval(self, *args: Any, **kwargs: Any) -> Any:
        value = await super().fetchval(*args, **kwargs)
        await self._after()
        return value

    async def fetch(self, *args: Any, **kwargs: Any) -> list[asyncpg.Record]:
        rows = await super().fetch(*args, **kwargs)
        await self._after()
        return rows


async def test_the_check_reads_one_snapshot_while_a_document_is_processed_meanwhile(
    runtime: Runtime, healthy: dict[str, uuid.UUID]
) -> None:
    """Between the check's first statement and the others, another connection uploads a document and
    completes its task (chunks, BM25 postings, task, message: committed). The check's figures and checks
    all describe the database before that (its REPEATABLE READ snapshot): no violation, and the counts of
    that moment, not documents from before with chunks from after. Runs last: it adds a document."""
    before = await check_integrity(runtime.pool, runtime.settings.queue_name, quiescent=True)
    assert before.ok, before.lines()

    async def process_a_document() -> None:
        [ref] = await enqueue(runtime, [("three.txt", long_text(300, seed=3).encode())])
        [msg] = await runtime.queue.read(120)
        work = await tasks.start_task(runtime.pool, ref.task_id, int(msg.read_ct), None, msg.msg_id)
        assert work is not None
        chunks = await prepare_chunks(runtime.settings, work.filename, work.content, work.file_type)
        vectors = np.random.default_rng(3).standard_normal((len(chunks), 8)).astype(np.float32)
        assert await tasks.complete_task(runtime.pool, runtime.queue, work, msg.msg_id, chunks, vectors)

    conn = await asyncpg.connect(plain_url(runtime.database_url), connection_class=_HookAfterFirstStatement)
    try:
        conn.hook = process_a_document
        during = await check_integrity(conn, runtime.settings.queue_name, quiescent=True)
        assert conn.hook is None  # it ran
    finally:
        await conn.close()
    assert during.ok, during.lines()
    assert during.counts == before.counts

    after = await check_integrity(runtime.pool, runtime.settings.queue_name, quiescent=True)
    assert after.ok, after.lines()
    assert after.counts["documents"] == before.counts["documents"] + 1
    assert after.counts["tasks"] == before.counts["tasks"] + 1
    assert after.counts["chunks"] > before.counts["chunks"]

"""Faults against real processes. A bounded chaos run (tests/chaos: worker SIGKILLs, a PostgreSQL
crash-restart, an embedder outage, the server SIGKILLed mid-stream and mid-upload) ends with every
invariant of rag_server.ingestion.integrity holding and every document chunked as a clean run chunks it.
Then the two windows the run found or aimed at, each pinned by its own test:
- a worker dying between reading a message and starting its task (the task stays `queued`, its message
  hidden for the visibility timeout): recovery releases it;
- a database outage outlasting a task's failure (its retry could not be written, so the task stayed
  `processing` under a worker alive again): the worker writes the retry once the database is back.
The visibility timeout is 120 s in these tests, beyond every wait: a task coming back in time came back
through the fix, not the timeout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import psycopg
import pytest

from rag_server.config import Settings
from rag_server.infra.database import plain_url
from rag_server.infra.runtime import Runtime
from rag_server.ingestion import tasks
from rag_server.ingestion.recovery import release_unstarted_messages
from tests.chaos.runner import ChaosConfig, run_chaos
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_embedding_settings, fake_ollama_env
from tests.support.ingest import assert_exact_chunks, enqueue, task_row, wait_for
from tests.support.processes import Proc, process_env, start_worker
from tests.support.sample_files import long_text

VISIBILITY_TIMEOUT_S = 120
WAIT_S = 60  # a correctness bound on each wait, far below the visibility timeout


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    return fake_embedding_settings(database_url, data_dir, fake, chunk_size=128)


def test_a_bounded_chaos_run_keeps_every_invariant() -> None:
    config = ChaosConfig(
        documents=10,
        duration_s=8,
        worker_kills=2,
        pg_crashes=1,
        embedder_outages=1,
        server_kills=2,
        upload_mb=4,
        quiesce_timeout_s=120,
    )
    result = run_chaos(config)
    report = "\n".join(result.lines())
    assert result.violations == [], report
    assert result.injected == {
        "worker_kill": 2,
        "pg_crash": 1,
        "embedder_outage": 1,
        "server_kill_streaming": 1,
        "server_kill_uploading": 1,
    }, report
    assert result.figures["documents ready"] == "10 of 10 acknowledged", report


async def message(runtime: Runtime, msg_id: int) -> asyncpg.Record:
    row = await runtime.pool.fetchrow(
        f"SELECT read_ct, vt <= clock_timestamp() AS visible FROM pgmq.q_{runtime.queue.name}"
        " WHERE msg_id = $1",
        msg_id,
    )
    assert row is not None
    return row


async def test_recovery_releases_only_messages_read_and_never_started(runtime: Runtime) -> None:
    unstarted, backoff, processing = await enqueue(
        runtime, [(f"{n}.txt", f"Document {n} of the window.".encode()) for n in ("a", "b", "c")]
    )
    msgs = {str(m.message["task_id"]): m for m in await runtime.queue.read(120, 3)}
    assert len(msgs) == 3
    # b: started, failed, waiting out its backoff (queued, message hidden): not a lost read.
    b = msgs[str(backoff.task_id)]
    assert await tasks.start_task(runtime.pool, backoff.task_id, int(b.read_ct), None, b.msg_id)
    assert await tasks.record_retry(runtime.pool, backoff.task_id, None, "boom", count_failure=True) == 1
    await runtime.queue.extend(b.msg_id, 60)
    # c: processing (its worker's liveness is recovery's other pass).
    c = msgs[str(processing.task_id)]
    assert await tasks.start_task(runtime.pool, processing.task_id, int(c.read_ct), None, c.msg_id)
    # a: read by a "worker" that died before start_task. Within the grace a live worker may still
    # start it: left alone.
    a = msgs[str(unstarted.task_id)]
    assert await release_unstarted_messages(runtime.pool, runtime.queue) == []
    assert await release_unstarted_messages(runtime.pool, runtime.queue, grace_s=0) == [unstarted.task_id]
    assert (await message(runtime, a.msg_id))["visible"]
    row = await runtime.pool.fetchrow(
        "SELECT status, attempts FROM job_tasks WHERE id = $1", unstarted.task_id
    )
    assert row is not None and (row["status"], row["attempts"]) == ("queued", 1)  # the lost delivery counted
    assert not (await message(runtime, b.msg_id))["visible"]
    assert not (await message(runtime, c.msg_id))["visible"]
    assert await release_unstarted_messages(runtime.pool, runtime.queue, grace_s=0) == []  # once


@pytest.fixture
def spawn(
    database_url: str, data_dir: Path, fake: FakeEmbeddingServer, tmp_path: Path, workers: list[Proc]
) -> Callable[..., Proc]:
    def start(name: str, url: str | None = None) -> Proc:
        env = process_env(
            url or database_url,
            data_dir,
            **fake_ollama_env(fake),
            RAG_CHUNK_SIZE="128",
            RAG_EMBEDDING_BATCH_SIZE="4",
            RAG_WORKER_POLL_INTERVAL_S="0.1",
            RAG_WORKER_RECOVERY_INTERVAL_S="1",
            RAG_WORKER_VISIBILITY_TIMEOUT_S=str(VISIBILITY_TIMEOUT_S),
            RAG_WORKER_RETRY_BACKOFF_S="1",
        )
        proc = start_worker(env, tmp_path / f"{name}.log")
        workers.append(proc)
        return proc

    return start


def finished(database_url: str, task_id: Any, proc: Proc) -> dict[str, Any]:
    return wait_for(
        lambda: (r := task_row(database_url, task_id))["status"] in ("completed", "failed") and r,
        timeout=WAIT_S,
        what=f"task finished (visibility timeout {VISIBILITY_TIMEOUT_S} s); log:\n{proc.log_tail()}",
    )


async def test_a_message_read_by_a_worker_that_died_is_processed_in_seconds(
    runtime: Runtime, settings: Settings, database_url: str, spawn: Callable[..., Proc]
) -> None:
    name, data = "read-then-died.txt", long_text(300, seed=11).encode()
    [ref] = await enqueue(runtime, [(name, data)])
    assert ref.document_id is not None
    # The dead reader: its own session reads (read_ct 1, hidden for 120 s) and ends, nothing started.
    reader = await asyncpg.connect(plain_url(database_url))
    try:
        read = await reader.fetch(
            "SELECT * FROM pgmq.read($1, 120, 1, jsonb_build_object('task_id', $2::text))",
            runtime.queue.name,
            str(ref.task_id),
        )
    finally:
        await reader.close()
    assert len(read) == 1 and read[0]["read_ct"] == 1
    proc = spawn("survivor")
    done = finished(database_url, ref.task_id, proc)
    assert done["status"] == "completed", proc.log()
    assert done["attempts"] == 2  # the lost delivery, then its own
    assert_exact_chunks(database_url, settings, ref.document_id, name, data)


async def test_an_outage_outlasting_a_failure_is_retried_when_the_database_returns(
    runtime: Runtime, settings: Settings, database_url: str, pg_server: str, spawn: Callable[..., Proc]
) -> None:
    app_name = "faults_outage_worker"
    url = f"{database_url}{'&' if '?' in database_url else '?'}application_name={app_name}"
    proc = spawn("outage", url)
    # SLOW400: each embedding batch takes 0.4 s, so the outage lands mid-task.
    name, data = "SLOW400-outlasting.txt", long_text(700, seed=12).encode()
    [ref] = await enqueue(runtime, [(name, data)])
    assert ref.document_id is not None
    wait_for(lambda: task_row(database_url, ref.task_id)["completed_chunks"] >= 4, WAIT_S, "embedding")
    database = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                (app_name,),
            )
            # The task failed and its retry could not be written: the database is still away.
            wait_for(lambda: "could not schedule retry" in proc.log(), WAIT_S, "the retry not written")
        finally:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
    done = finished(database_url, ref.task_id, proc)
    assert done["status"] == "completed", proc.log()
    assert_exact_chunks(database_url, settings, ref.document_id, name, data)

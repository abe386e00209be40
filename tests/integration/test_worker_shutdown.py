"""SIGTERM with a task that cannot finish within the grace period: the worker exits 0, the task goes
back to queued with its message visible at once, nothing is written, and another worker finishes it."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from rag_server.ingestion import store
from rag_server.ingestion.pipeline import incoming_file, prepare_chunks_sync
from tests.fakes.ingest_fake_embeddings import FakeEmbeddingServer, fake_ollama_env
from tests.fixtures.ingest_files import long_text
from tests.fixtures.ingest_stack import wait_for
from tests.processes import Proc, process_env, start_worker


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeEmbeddingServer]:
    server = FakeEmbeddingServer(dim=768).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=data_dir,
        embedding_provider="ollama",
        embedding_model="nomic-embed-text",
        embedding_dim=768,
        embedding_base_url=fake.base_url,
    )


def query(database_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute(sql, args).fetchall()


@pytest.fixture
def workers() -> Iterator[list[Proc]]:
    procs: list[Proc] = []
    yield procs
    for proc in procs:
        proc.kill()


async def test_sigterm_past_the_grace_period_releases_the_task(
    runtime: Runtime,
    settings: Settings,
    fake: FakeEmbeddingServer,
    database_url: str,
    data_dir: Path,
    tmp_path: Path,
    workers: list[Proc],
) -> None:
    name, data = "SLOW1000-shutdown.txt", long_text(1500, seed=9).encode()
    _, [task] = await store.create_upload_batch(runtime.pool, runtime.queue, [incoming_file(name, data)])
    base = dict(
        **fake_ollama_env(fake),
        RAG_EMBEDDING_BATCH_SIZE="4",
        RAG_WORKER_POLL_INTERVAL_S="0.1",
        RAG_WORKER_VISIBILITY_TIMEOUT_S="60",
    )  # long: only an explicit release makes it visible soon

    first = start_worker(
        process_env(database_url, data_dir, **base, RAG_WORKER_SHUTDOWN_GRACE_S="1"), tmp_path / "first.log"
    )
    workers.append(first)

    def row() -> dict[str, Any]:
        return query(database_url, "SELECT * FROM job_tasks WHERE id = %s", task.task_id)[0]

    wait_for(lambda: row()["completed_chunks"] >= 4, timeout=60, what="embedding started")
    assert first.stop(signal.SIGTERM, timeout=30) == 0, first.log()
    assert "released message" in first.log()

    after = row()
    assert (after["status"], after["completed_chunks"], after["attempts"]) == ("queued", 0, 1)
    assert (
        query(database_url, "SELECT count(*) AS n FROM chunks WHERE document_id = %s", task.document_id)[0][
            "n"
        ]
        == 0
    )
    [msg] = query(database_url, "SELECT read_ct, vt <= now() AS visible FROM pgmq.q_ingest")
    assert msg == {"read_ct": 1, "visible": True}

    second = start_worker(process_env(database_url, data_dir, **base), tmp_path / "second.log")
    workers.append(second)
    done = wait_for(lambda: (r := row())["status"] == "completed" and r, timeout=90, what="second worker")
    assert done["attempts"] == 2
    expected = prepare_chunks_sync(settings, name, data, "txt")
    rows = query(
        database_url,
        "SELECT chunk_index, text FROM chunks WHERE document_id = %s ORDER BY chunk_index",
        task.document_id,
    )
    assert [(r["chunk_index"], r["text"]) for r in rows] == [(c.index, c.text) for c in expected]
    assert second.stop() == 0

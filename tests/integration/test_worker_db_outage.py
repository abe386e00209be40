"""A database outage mid-task is transient: the worker's connections are terminated while it embeds,
the task is retried, and the document ends with exactly its chunks (no partial, no duplicates)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_embedding_settings, fake_ollama_env
from tests.support.ingest import (
    assert_exact_chunks,
    chunk_count,
    enqueue,
    task_row,
    wait_for,
)
from tests.support.processes import Proc, process_env, start_worker
from tests.support.sample_files import long_text

APP_NAME = "ingest_outage_worker"


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    return fake_embedding_settings(database_url, data_dir, fake, chunk_size=128)


@pytest.fixture
def worker(
    request: pytest.FixtureRequest,
    database_url: str,
    data_dir: Path,
    fake: FakeEmbeddingServer,
    tmp_path: Path,
) -> Iterator[Proc]:
    # application_name lets the test terminate exactly this worker's connections.
    url = f"{database_url}{'&' if '?' in database_url else '?'}application_name={APP_NAME}"
    env = process_env(
        url,
        data_dir,
        **fake_ollama_env(fake),
        RAG_CHUNK_SIZE="128",
        RAG_EMBEDDING_BATCH_SIZE="4",
        RAG_WORKER_VISIBILITY_TIMEOUT_S="3",
        RAG_WORKER_RETRY_BACKOFF_S="1",
        RAG_WORKER_POLL_INTERVAL_S="0.1",
        **getattr(request, "param", {}),
    )
    proc = start_worker(env, tmp_path / "worker.log")
    yield proc
    assert proc.stop() == 0, proc.log()


async def test_terminated_connections_mid_task_are_retried(
    runtime: Runtime, settings: Settings, worker: Proc, database_url: str, pg_server: str
) -> None:
    # SLOW400 in the filename reaches every chunk's search text: each embedding batch takes 0.4 s.
    name, data = "SLOW400-outage.txt", long_text(1500, seed=5).encode()
    [task] = await enqueue(runtime, [(name, data)])
    assert task.document_id is not None

    def row() -> dict[str, Any]:
        return task_row(database_url, task.task_id)

    wait_for(lambda: row()["completed_chunks"] >= 4, timeout=60, what="embedding started")
    # The outage: no new connections to this database, and the worker's open ones are cut.
    database = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                (APP_NAME,),
            )
            wait_for(
                lambda: "failed transiently" in worker.log(),
                timeout=60,
                what="the task failing on the outage (a heartbeat failing first is not enough)",
            )
            counts = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (APP_NAME,)
            ).fetchone()
            assert counts == (0,)
        finally:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
    assert chunk_count(database_url, task.document_id) == 0

    done = wait_for(
        lambda: (r := row())["status"] in ("completed", "failed") and r, timeout=90, what="finished"
    )
    assert done["status"] == "completed", (done, worker.log())
    assert done["attempts"] >= 2 and done["error"] is None
    assert_exact_chunks(database_url, settings, task.document_id, name, data)


DISK_FULL_TRIGGER = """
CREATE FUNCTION qa_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  RAISE EXCEPTION USING ERRCODE = 'disk_full',
    MESSAGE = 'could not extend file "base/5/16765": No space left on device';
END $$;
CREATE TRIGGER qa_disk_full BEFORE INSERT ON chunks EXECUTE FUNCTION qa_disk_full();
"""


@pytest.mark.parametrize("worker", [{"RAG_WORKER_MAX_DELIVERIES": "3"}], indirect=True)
async def test_a_database_disk_full_backs_off_and_never_blames_the_document(
    runtime: Runtime, worker: Proc, database_url: str
) -> None:
    """PostgreSQL's disk full at the final write (SQLSTATE 53100, what a full tmpfs gave): the task was
    handed back every 5 s, each try writing WAL again on the full disk, and after RAG_WORKER_MAX_DELIVERIES
    it failed saying workers "died or were stopped while processing this document" — none had."""
    with psycopg.connect(database_url, autocommit=True) as owner:
        owner.execute(DISK_FULL_TRIGGER)
        try:
            [task] = await enqueue(runtime, [("disk-full.txt", long_text(200, seed=9).encode())])
            done = wait_for(
                lambda: (r := task_row(database_url, task.task_id))["status"] == "failed" and r,
                timeout=60,
                what="the task given up",
            )
        finally:
            owner.execute("DROP TRIGGER qa_disk_full ON chunks; DROP FUNCTION qa_disk_full()")
    assert done["error"].startswith(
        "Gave up after 3 deliveries: The database was unavailable (DiskFullError: its disk is full"
    )
    assert "workers died" not in done["error"]
    # Each hand-back waits longer (1, 2, 4 s here; 5 s doubling to 300 s by default), not 1 s each time.
    assert "retry in 2 s" in worker.log() and "retry in 4 s" in worker.log(), worker.log()
    assert task.document_id is not None and chunk_count(database_url, task.document_id) == 0

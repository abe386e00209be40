"""A worker prunes by itself (RAG_RETENTION_INTERVAL_S, tiny here): a real worker process, its own log. A
prune that fails is logged and tried again, and the worker goes on taking tasks meanwhile."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.deletion import delete_document
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_embedding_settings, fake_ollama_env
from tests.support.ingest import enqueue, query, task_row, wait_for
from tests.support.processes import Proc, process_env, start_worker

WAIT_S = 60  # a correctness bound on each wait, not a speed assertion


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    return fake_embedding_settings(database_url, data_dir, fake)


def batch_exists(database_url: str, batch_id: object) -> bool:
    return bool(query(database_url, "SELECT 1 FROM job_batches WHERE id = %s", batch_id))


async def test_the_worker_prunes_and_survives_a_failed_prune(
    runtime: Runtime,
    database_url: str,
    data_dir: Path,
    fake: FakeEmbeddingServer,
    tmp_path: Path,
    workers: list[Proc],
) -> None:
    refs = await enqueue(
        runtime, [("old-a.txt", b"Retention: an old file, processed."), ("old-b.txt", b"Another.")]
    )
    env = process_env(
        database_url,
        data_dir,
        **fake_ollama_env(fake),
        RAG_WORKER_POLL_INTERVAL_S="0.1",
        RAG_RETENTION_INTERVAL_S="0.5",
    )
    log = tmp_path / "worker.log"
    archive = runtime.queue.archive_table
    # The archive away: every prune fails at its dead messages, after the batches (none old yet).
    with psycopg.connect(database_url, autocommit=True) as owner:
        owner.execute(f"ALTER TABLE {archive} RENAME TO retention_away")
        try:
            workers.append(start_worker(env, log))
            wait_for(lambda: "retention prune failed" in workers[0].log(), WAIT_S, "a failed prune logged")
            # ... and the worker still works.
            for ref in refs:
                wait_for(
                    lambda r=ref: task_row(database_url, r.task_id)["status"] == "completed", WAIT_S, "done"
                )
        finally:
            owner.execute(f'ALTER TABLE pgmq.retention_away RENAME TO "a_{runtime.queue.name}"')
    batch_id = query(database_url, "SELECT batch_id FROM job_tasks WHERE id = %s", refs[0].task_id)[0][
        "batch_id"
    ]
    for ref in refs:
        assert ref.document_id is not None
        await delete_document(runtime.pool, ref.document_id)
    with psycopg.connect(database_url) as owner:
        owner.execute(
            "UPDATE job_batches SET created_at = created_at - interval '40 days' WHERE id = %s", (batch_id,)
        )
        owner.execute(
            "UPDATE job_tasks SET created_at = created_at - interval '40 days',"
            " finished_at = finished_at - interval '40 days' WHERE batch_id = %s",
            (batch_id,),
        )
    wait_for(lambda: not batch_exists(database_url, batch_id), WAIT_S, "the old batch pruned by the worker")
    assert "retention: removed: batches 1, tasks 2" in workers[0].log()
    assert workers[0].popen.poll() is None  # still running

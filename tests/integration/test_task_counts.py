"""A task's chunk counts are its current attempt's. QA (2026-12-07) saw a big file's progress line count
5,689 chunks and its document page then page through 5,674 stored. One attempt counts what it stores
(set_task_total and complete_task both take its chunks, deduplicated by the chunker), but a task handed
back (a worker stopping, one restarting on new code, a dead worker's task re-queued, a retry) kept the
total of the attempt that ended: the next attempt showed `0 / 5,689 chunks embedded` while it read the
file, and the ingest bar counted them, though it parsed the file anew, into another number of chunks when
the chunking (code or settings) had changed meanwhile. Now an attempt handed back counts nothing, and the
next one counts its own chunks from 0: what is shown is what is stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from rag_server.config import Settings
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_embedding_settings
from tests.support.ingest import chunk_count, query, upload, wait_batch, wait_for
from tests.support.processes import Proc, settings_env, start_worker
from tests.support.sample_files import long_text


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    return fake_embedding_settings(
        database_url, data_dir, fake, embedding_batch_size=8, chunk_size=128, worker_poll_interval_s=0.1
    )


def test_a_task_handed_back_counts_nothing_and_its_next_attempt_counts_what_it_stores(
    sync_app_client: TestClient,
    settings: Settings,
    database_url: str,
    fake: FakeEmbeddingServer,
    workers: list[Proc],
    tmp_path: Path,
) -> None:
    client = sync_app_client
    # The name is in every chunk's search text: its embedding requests wait at the fake until released.
    response = upload(client, [("HOLD-attempts-report.txt", long_text(4000, seed=7).encode())]).json()
    [task] = response["tasks"]
    env = settings_env(settings)
    # The first attempt: chunks of 128 tokens, stopped (handed back) while it embeds them.
    first = start_worker({**env, "RAG_WORKER_SHUTDOWN_GRACE_S": "0.5"}, tmp_path / "first.log")
    workers.append(first)
    wait_for(lambda: fake.held["attempts"] >= 1, timeout=60, what="the first attempt at the embedder")
    [row] = query(database_url, "SELECT status, total_chunks FROM job_tasks WHERE id = %s", task["task_id"])
    assert row["status"] == "processing" and row["total_chunks"] > 8
    first_total = row["total_chunks"]
    assert first.stop() == 0, first.log_tail()

    shown = client.get(f"/documents/{task['document_id']}").json()["task"]
    assert shown["status"] == "queued"
    # Not `0 / <the attempt that ended>`: that attempt's chunks are not the next one's.
    assert (shown["total_chunks"], shown["completed_chunks"]) == (0, 0), (shown, first_total)

    # The next attempt chunks the file otherwise (another worker's settings, or code updated meanwhile).
    fake.release("attempts")
    workers.append(start_worker({**env, "RAG_CHUNK_SIZE": "256"}, tmp_path / "second.log"))
    [done] = wait_batch(client, response["batch_id"])["tasks"]
    assert done["status"] == "completed", done
    stored = chunk_count(database_url, task["document_id"])
    document = client.get(f"/documents/{task['document_id']}").json()
    assert done["total_chunks"] == done["completed_chunks"] == document["chunk_count"] == stored
    assert stored != first_total  # the file does reproduce two counts

"""The worker's guarantees with the real local MiniLM model: kill -9 mid-task leaves nothing partial
and a second worker finishes with exactly the expected chunks; SIGTERM finishes the task in flight;
two workers share the queue without processing anything twice."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from tests.support.ingest import assert_exact_chunks, chunk_count, enqueue, query, task_row, wait_for
from tests.support.processes import Proc, process_env, start_worker
from tests.support.sample_files import long_text

WORKER_ENV = {
    # A killed worker's message reappears through its free liveness lock, not this timeout. A short one
    # made a heartbeat that a loaded machine delayed by 2 s redeliver a message (attempts 3, not 2).
    "RAG_WORKER_VISIBILITY_TIMEOUT_S": "15",
    "RAG_EMBEDDING_BATCH_SIZE": "8",  # progress moves in small steps, so "mid-task" is easy to hit
    "RAG_CHUNK_SIZE": "128",
    "RAG_CHUNK_OVERLAP": "16",
    "RAG_WORKER_POLL_INTERVAL_S": "0.1",
}


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=data_dir, chunk_size=128, chunk_overlap=16)


@pytest.fixture(scope="module")
def env(database_url: str, data_dir: Path) -> dict[str, str]:
    return process_env(database_url, data_dir, **WORKER_ENV)


@pytest.fixture
def spawn(env: dict[str, str], tmp_path: Path, workers: list[Proc]) -> Callable[[str], Proc]:
    """Starts a worker with this module's env, logging to <name>.log; killed at the end if still running."""

    def start(name: str) -> Proc:
        proc = start_worker(env, tmp_path / f"{name}.log")
        workers.append(proc)
        return proc

    return start


async def test_kill_9_mid_task_then_a_second_worker_finishes_exactly(
    runtime: Runtime, settings: Settings, database_url: str, spawn: Callable[[str], Proc]
) -> None:
    data = long_text(12_000, seed=7).encode()
    [task] = await enqueue(runtime, [("big.txt", data)])
    assert task.document_id is not None

    first = spawn("first")
    row = wait_for(
        lambda: (r := task_row(database_url, task.task_id))["completed_chunks"] >= 16 and r,
        timeout=120,
        what="first worker embedding",
    )
    first.popen.send_signal(signal.SIGKILL)
    first.popen.wait()

    # Killed mid-task: progress was visible, but no chunk of the document is.
    assert row["status"] == "processing" and 16 <= row["completed_chunks"] < row["total_chunks"]
    assert chunk_count(database_url, task.document_id) == 0

    second = spawn("second")
    done = wait_for(
        lambda: (
            (r := task_row(database_url, task.task_id))["status"] != "processing"
            and r["status"] != "queued"
            and r
        ),
        timeout=240,
        what="second worker finishing",
    )
    assert done["status"] == "completed", done
    assert done["attempts"] == 2  # pgmq read_ct: the message was delivered again after the kill
    n = assert_exact_chunks(database_url, settings, task.document_id, "big.txt", data)
    assert done["total_chunks"] == done["completed_chunks"] == n > 60
    dupes = query(
        database_url,
        "SELECT count(*) - count(DISTINCT chunk_index) AS d FROM chunks WHERE document_id = %s",
        task.document_id,
    )
    assert dupes[0]["d"] == 0
    assert query(database_url, "SELECT count(*) AS n FROM pgmq.q_ingest")[0]["n"] == 0
    assert query(database_url, "SELECT status, chunk_count FROM documents WHERE id = %s", task.document_id)[
        0
    ] == {"status": "ready", "chunk_count": n}
    assert second.stop() == 0, second.log()


async def test_sigterm_finishes_the_task_in_flight(
    runtime: Runtime, settings: Settings, database_url: str, spawn: Callable[[str], Proc]
) -> None:
    data = long_text(6_000, seed=8).encode()
    [task] = await enqueue(runtime, [("graceful.txt", data)])
    worker = spawn("graceful")
    wait_for(
        lambda: task_row(database_url, task.task_id)["completed_chunks"] >= 8,
        timeout=120,
        what="worker embedding",
    )
    assert worker.stop(signal.SIGTERM, timeout=120) == 0, worker.log()
    row = task_row(database_url, task.task_id)
    assert row["status"] == "completed" and row["attempts"] == 1
    assert task.document_id is not None
    assert_exact_chunks(database_url, settings, task.document_id, "graceful.txt", data)
    assert "worker stopped" in worker.log()


async def test_two_workers_share_the_queue_without_double_processing(
    runtime: Runtime, settings: Settings, database_url: str, spawn: Callable[[str], Proc]
) -> None:
    files = [(f"shared{i}.txt", long_text(300, seed=100 + i).encode()) for i in range(8)]
    tasks = await enqueue(runtime, files)
    a, b = spawn("a"), spawn("b")
    ids = [t.task_id for t in tasks]
    wait_for(
        lambda: (
            query(
                database_url,
                "SELECT count(*) AS n FROM job_tasks WHERE id = ANY(%s) AND status = 'completed'",
                ids,
            )[0]["n"]
            == len(files)
        ),
        timeout=240,
        what="all completed",
    )
    rows = query(database_url, "SELECT attempts FROM job_tasks WHERE id = ANY(%s)", ids)
    assert [r["attempts"] for r in rows] == [1] * 8  # every message was read exactly once
    for (name, data), task in zip(files, tasks, strict=True):
        assert task.document_id is not None
        assert_exact_chunks(database_url, settings, task.document_id, name, data)
    logs_text = b.log() + a.log()
    assert logs_text.count(" chunks written") == 8
    for proc in (a, b):
        assert proc.stop() == 0

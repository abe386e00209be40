"""Crashes cost seconds, not a document's retries: a worker killed with SIGKILL is noticed by its free
liveness lock and its task is queued again at once (the visibility timeout here is 120 s, beyond every
wait below), and the deliveries lost to dead workers are not failures of the document. A document that
fails by itself still fails after RAG_WORKER_MAX_ATTEMPTS failures; one that kills every worker fails
after RAG_WORKER_MAX_DELIVERIES deliveries."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.batches import batch_status
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_embedding_settings, fake_ollama_env
from tests.support.ingest import assert_exact_chunks, chunk_count, enqueue, query, task_row, wait_for
from tests.support.processes import Proc, process_env, start_worker
from tests.support.sample_files import long_text

# Far beyond every wait in this module: a task coming back in time came back through recovery.
VISIBILITY_TIMEOUT_S = 120
# A correctness bound on each wait, not a speed assertion.
WAIT_S = 60


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    return fake_embedding_settings(database_url, data_dir, fake, chunk_size=128)


@pytest.fixture
def spawn(
    database_url: str, data_dir: Path, fake: FakeEmbeddingServer, tmp_path: Path, workers: list[Proc]
) -> Callable[..., Proc]:
    """Starts a worker (extra RAG_* settings as keywords), logging to <name>.log; killed at the end."""

    def start(name: str, **extra: str) -> Proc:
        env = process_env(
            database_url,
            data_dir,
            **fake_ollama_env(fake),
            RAG_CHUNK_SIZE="128",
            RAG_EMBEDDING_BATCH_SIZE="4",
            RAG_WORKER_POLL_INTERVAL_S="0.1",
            RAG_WORKER_RECOVERY_INTERVAL_S="1",
            RAG_WORKER_VISIBILITY_TIMEOUT_S=str(VISIBILITY_TIMEOUT_S),
            RAG_WORKER_RETRY_BACKOFF_S="0",
            **extra,
        )
        proc = start_worker(env, tmp_path / f"{name}.log")
        workers.append(proc)
        return proc

    return start


def worker_id_of(proc: Proc) -> int:
    """The id a worker logged when it became ready (its liveness lock's key)."""
    found = wait_for(
        lambda: re.search(r"worker ready: id (\d+)", proc.log()), timeout=WAIT_S, what="worker ready"
    )
    return int(found.group(1))


def kill_while_processing(database_url: str, task_id: UUID, proc: Proc, delivery: int) -> dict[str, Any]:
    """SIGKILL `proc` once it is embedding the task's `delivery`-th delivery; the task row just before."""
    worker_id = worker_id_of(proc)
    row = wait_for(
        lambda: (
            (r := task_row(database_url, task_id))["status"] == "processing"
            and r["attempts"] == delivery
            and r["worker_id"] == worker_id
            and r["completed_chunks"] >= 4
            and r
        ),
        timeout=WAIT_S,
        what=f"delivery {delivery} embedding in worker {worker_id}",
    )
    proc.popen.send_signal(signal.SIGKILL)
    proc.popen.wait()
    return row


def wait_finished(database_url: str, task_id: UUID) -> dict[str, Any]:
    return wait_for(
        lambda: (r := task_row(database_url, task_id))["status"] not in ("queued", "processing") and r,
        timeout=WAIT_S,
        what="task finished",
    )


async def runtime_batch_task(runtime: Runtime, task_id: UUID) -> dict[str, Any]:
    """The task as the batch status API shows it."""
    batch_id = await runtime.pool.fetchval("SELECT batch_id FROM job_tasks WHERE id = $1", task_id)
    status = await batch_status(runtime.pool, batch_id)
    [row] = [t for t in status.tasks if t.task_id == task_id]
    return row.model_dump()


async def test_a_killed_workers_task_is_taken_by_a_live_worker_at_once(
    runtime: Runtime, settings: Settings, database_url: str, spawn: Callable[..., Proc]
) -> None:
    a, b = spawn("a"), spawn("b")
    ids = {worker_id_of(a): a, worker_id_of(b): b}
    # SLOW500 in the filename reaches every chunk's text: each embedding batch of 4 takes 0.5 s.
    name, data = "SLOW500-recovery.txt", long_text(3000, seed=21).encode()
    [task] = await enqueue(runtime, [(name, data)])
    assert task.document_id is not None
    taker = ids[wait_for(lambda: task_row(database_url, task.task_id)["worker_id"], WAIT_S, "task taken")]
    survivor = b if taker is a else a

    row = kill_while_processing(database_url, task.task_id, taker, delivery=1)
    assert chunk_count(database_url, task.document_id) == 0

    done = wait_finished(database_url, task.task_id)
    assert done["status"] == "completed", done
    assert (done["attempts"], done["failures"], done["error"]) == (2, 0, None)
    assert f"its worker {row['worker_id']} died; queued again" in survivor.log()
    n = assert_exact_chunks(database_url, settings, task.document_id, name, data)
    assert done["total_chunks"] == n
    assert query(database_url, "SELECT count(*) AS n FROM pgmq.q_ingest")[0]["n"] == 0
    assert survivor.stop() == 0, survivor.log()


async def test_repeated_worker_deaths_do_not_fail_a_healthy_document(
    runtime: Runtime, settings: Settings, database_url: str, spawn: Callable[..., Proc]
) -> None:
    # Each worker is the only one (as under `rag-server up`): the next one to start recovers the task.
    limits = {"RAG_WORKER_MAX_ATTEMPTS": "2"}
    name, data = "SLOW500-survivor.txt", long_text(2000, seed=22).encode()
    [task] = await enqueue(runtime, [(name, data)])
    assert task.document_id is not None
    for delivery in (1, 2, 3):
        kill_while_processing(database_url, task.task_id, spawn(f"victim{delivery}", **limits), delivery)

    last = spawn("last", **limits)
    done = wait_finished(database_url, task.task_id)
    assert done["status"] == "completed", done
    assert (done["attempts"], done["failures"]) == (4, 0)
    assert_exact_chunks(database_url, settings, task.document_id, name, data)
    status = await runtime_batch_task(runtime, task.task_id)
    assert (status["attempts"], status["failures"]) == (4, 0)
    assert last.stop() == 0, last.log()


async def test_a_document_nested_too_deeply_fails_at_once(
    runtime: Runtime, database_url: str, spawn: Callable[..., Proc]
) -> None:
    # Nesting this deep makes the JSON parser raise RecursionError: the same file does the same again,
    # so it is final with a sentence (it was retried as an unexpected error, RAG_WORKER_MAX_ATTEMPTS times).
    [task] = await enqueue(runtime, [("deep.json", b"[" * 100_000 + b"]" * 100_000)])
    worker = spawn("parser", RAG_WORKER_MAX_ATTEMPTS="2")
    done = wait_finished(database_url, task.task_id)
    assert done["status"] == "failed", done
    assert (done["attempts"], done["failures"], done["error"]) == (
        1,
        1,
        "The file is nested too deeply to be read.",
    )
    document = query(database_url, "SELECT status, error FROM documents WHERE id = %s", task.document_id)[0]
    assert document == {"status": "failed", "error": done["error"]}
    assert worker.stop() == 0, worker.log()


async def test_a_document_that_kills_every_worker_fails_after_the_delivery_limit(
    runtime: Runtime, database_url: str, spawn: Callable[..., Proc]
) -> None:
    limits = {"RAG_WORKER_MAX_DELIVERIES": "2"}
    name, data = "SLOW500-poison.txt", long_text(2000, seed=23).encode()
    [task] = await enqueue(runtime, [(name, data)])
    assert task.document_id is not None
    for delivery in (1, 2):
        kill_while_processing(database_url, task.task_id, spawn(f"poisoned{delivery}", **limits), delivery)

    worker = spawn("judge", **limits)
    done = wait_finished(database_url, task.task_id)
    assert done["status"] == "failed", done
    assert (done["attempts"], done["failures"]) == (3, 0)
    assert done["error"].startswith(
        "Gave up after 2 deliveries: workers died or were stopped while processing this document 2 times"
    ), done
    assert chunk_count(database_url, task.document_id) == 0
    assert query(database_url, "SELECT count(*) AS n FROM pgmq.q_ingest")[0]["n"] == 0
    assert worker.stop() == 0, worker.log()

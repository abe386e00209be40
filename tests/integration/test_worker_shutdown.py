"""SIGTERM with a task that cannot finish within the grace period: the worker exits 0, the task goes
back to queued with its message visible at once, nothing is written, and another worker finishes it.
SIGTERM while the worker starts its parsing child: it stops at once, the child with it."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_embedding_settings, fake_ollama_env
from tests.support.child_hooks import run_at_child_start
from tests.support.ingest import (
    assert_exact_chunks,
    chunk_count,
    enqueue,
    query,
    task_row,
    wait_for,
)
from tests.support.processes import Proc, process_env, start_worker
from tests.support.sample_files import long_text


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    return fake_embedding_settings(database_url, data_dir, fake)


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
    [task] = await enqueue(runtime, [(name, data)])
    assert task.document_id is not None
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
        return task_row(database_url, task.task_id)

    wait_for(lambda: row()["completed_chunks"] >= 4, timeout=60, what="embedding started")
    assert first.stop(signal.SIGTERM, timeout=30) == 0, first.log()
    assert "released message" in first.log()

    after = row()
    assert (after["status"], after["completed_chunks"], after["attempts"]) == ("queued", 0, 1)
    assert chunk_count(database_url, task.document_id) == 0
    [msg] = query(database_url, "SELECT read_ct, vt <= now() AS visible FROM pgmq.q_ingest")
    assert msg == {"read_ct": 1, "visible": True}

    second = start_worker(process_env(database_url, data_dir, **base), tmp_path / "second.log")
    workers.append(second)
    done = wait_for(lambda: (r := row())["status"] == "completed" and r, timeout=90, what="second worker")
    assert done["attempts"] == 2
    assert_exact_chunks(database_url, settings, task.document_id, name, data)
    assert second.stop() == 0


# The parsing child hangs before its imports are done (a slow disk, a cold start), after saying so.
PARSER_HANGS_AT_START = """
    import sys, time
    if "rag_server.ingestion.parse_child" in sys.orig_argv:
        open({started!r}, "w").close()
        time.sleep(300)
"""


async def test_sigterm_while_the_parser_starts_stops_at_once_with_its_child(
    runtime: Runtime,
    fake: FakeEmbeddingServer,
    database_url: str,
    data_dir: Path,
    tmp_path: Path,
    workers: list[Proc],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started = tmp_path / "parser-started"
    run_at_child_start(PARSER_HANGS_AT_START.format(started=str(started)), tmp_path, monkeypatch)
    worker = start_worker(process_env(database_url, data_dir, **fake_ollama_env(fake)), tmp_path / "w.log")
    workers.append(worker)
    wait_for(started.exists, timeout=60, what="the parsing child started")
    [child] = psutil.Process(worker.popen.pid).children()

    # Waiting for the child would be its 300 s start timeout: past 15 s, stop() kills (exit -9).
    assert worker.stop(signal.SIGTERM, timeout=15) == 0, worker.log()
    assert "worker stopped before it was ready" in worker.log()
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE

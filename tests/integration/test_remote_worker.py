"""A worker on "another host" needs only DATABASE_URL: a real `rag-server worker` with its own, empty
RAG_DATA_DIR reaches the database over TCP (127.0.0.1:<port>, the embedded cluster started with
RAG_EMBEDDED_LISTEN) and shares the queue with a local worker on the unix socket."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient

from rag_server.config import Settings
from rag_server.infra.embedded_postgres import EmbeddedPostgres
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_embedding_settings
from tests.support.clusters import tcp_cluster
from tests.support.ingest import assert_exact_chunks, query, upload, wait_batch
from tests.support.processes import Proc, settings_env, start_worker

FILES = 16


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedPostgres]:
    """This module's embedded cluster, listening on TCP as an operator would set it up."""
    with tcp_cluster("ragw-") as embedded:
        yield embedded


@pytest.fixture(scope="module")
def pg_server(cluster: EmbeddedPostgres) -> str:
    return cluster.uri


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    return fake_embedding_settings(
        database_url, data_dir, fake, chunk_size=64, chunk_overlap=8, worker_poll_interval_s=0.1
    )


def tcp_url(cluster: EmbeddedPostgres, database_url: str) -> str:
    """The same database over TCP: what a worker on another host is given."""
    port = re.search(r"port=(\d+)", cluster.uri)
    assert port, cluster.uri
    return f"postgresql://postgres@127.0.0.1:{port.group(1)}{urlsplit(database_url).path}"


def wait_ready(proc: Proc) -> int:
    """The worker's id once it has taken its lease (its log says so)."""
    for _ in range(1200):
        found = re.search(r"worker ready: id (\d+)", proc.log())
        if found:
            return int(found.group(1))
        assert proc.popen.poll() is None, proc.log_tail()
        time.sleep(0.1)
    raise AssertionError(f"the worker never became ready:\n{proc.log_tail()}")


def completed(proc: Proc) -> list[str]:
    return re.findall(r"task ([0-9a-f-]{36}) completed", proc.log())


def test_a_worker_with_only_database_url_shares_the_queue(
    cluster: EmbeddedPostgres,
    settings: Settings,
    sync_app_client: TestClient,
    workers: list[Proc],
    tmp_path: Path,
) -> None:
    remote_dir = tmp_path / "remote-host"  # a fresh data dir: nothing of the server's
    remote_dir.mkdir()
    remote = settings.model_copy(update={"database_url": tcp_url(cluster, settings.database_url or "")})
    remote_env = {**settings_env(remote), "RAG_DATA_DIR": str(remote_dir)}
    # The remote worker is ready before the upload and the local one starts after it: the remote one
    # reads the first messages, so the assertion that it worked cannot depend on a race it might lose.
    workers.append(start_worker(remote_env, tmp_path / "remote.log"))
    remote_worker = workers[0]
    remote_id = wait_ready(remote_worker)

    files = [
        (f"doc-{i:02d}.txt", f"Document {i}. " + "Zebrafish hearts regrow. " * (20 + i)) for i in range(FILES)
    ]
    r = upload(sync_app_client, [(name, text.encode()) for name, text in files])
    assert r.status_code == 202, r.text
    workers.append(start_worker(settings_env(settings), tmp_path / "local.log"))
    local_worker = workers[1]
    assert wait_ready(local_worker) != remote_id
    status = wait_batch(sync_app_client, r.json()["batch_id"])
    assert status["counts"].get("completed") == FILES, status

    assert local_worker.stop() == 0 and remote_worker.stop() == 0
    by_remote, by_local = completed(remote_worker), completed(local_worker)
    assert by_remote, f"the remote worker completed no task:\n{remote_worker.log_tail()}"
    # Every task completed exactly once, by one of the two.
    assert sorted(by_remote + by_local) == sorted({*by_remote, *by_local})
    assert len(by_remote) + len(by_local) == FILES
    docs = {row["filename"]: row for row in query(settings.database_url or "", "SELECT * FROM documents")}
    assert sorted(docs) == [name for name, _ in files]
    for name, text in files:
        assert docs[name]["status"] == "ready"
        assert_exact_chunks(settings.database_url or "", settings, docs[name]["id"], name, text.encode())
    # The remote worker used nothing local: no embedded cluster was started in its data dir.
    assert not (remote_dir / "pg").exists()

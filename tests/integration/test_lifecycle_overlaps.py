"""A document's life cycle overlapping another upload's (QA): a folder ingested again with `--replace`
while the first run's tasks wait, a copy of a document whose original is deleted before it was read.

The real application in this process and a real `rag-server worker` subprocess on the same database,
frozen outside `with worker.running()` ("no worker running": queued tasks stay queued), as in
test_document_lifecycle.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from rag_server.config import Settings
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_embedding_settings
from tests.support.ingest import wait_batch
from tests.support.paused_worker import PausedWorker
from tests.support.processes import settings_env


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    return fake_embedding_settings(
        database_url,
        data_dir,
        fake,
        chunk_size=128,
        chunk_overlap=16,
        worker_max_attempts=1,
        worker_retry_backoff_s=0,
        worker_poll_interval_s=0.1,
    )


@pytest.fixture(scope="module")
def client(sync_app_client: TestClient) -> TestClient:
    return sync_app_client


@pytest.fixture(scope="module")
def worker(settings: Settings, data_dir: Path) -> Iterator[PausedWorker]:
    assert settings.database_url
    with PausedWorker.start(settings_env(settings), data_dir / "worker.log", settings.database_url) as paused:
        yield paused


def upload(client: TestClient, files: dict[str, bytes], **form: str) -> Any:
    parts = [("files", (name, data, "application/octet-stream")) for name, data in files.items()]
    return client.post("/upload", files=parts, data=form)


def search_ids(client: TestClient, text: str) -> set[str]:
    r = client.post("/search", json={"query": text, "search_type": "bm25", "top_k": 20})
    assert r.status_code == 200, r.text
    return {h["document_id"] for h in r.json()["results"]}


def test_a_replacing_upload_sends_a_file_unchanged_while_its_document_waits_as_a_duplicate(
    client: TestClient, worker: PausedWorker
) -> None:
    # `rag-server ingest docs --replace` run again while the first run's other.md still waited: the server
    # refused the whole upload with a 409 ("'other.md' is still being processed"), so the changed
    # guide.md was not replaced either, although other.md holds the very bytes being processed (QA).
    first = upload(client, {"guide.md": b"The guide, first edition: the wombat burrows."}).json()
    with worker.running():
        assert wait_batch(client, first["batch_id"])["status"] == "completed"
    guide = first["tasks"][0]["document_id"]
    waiting = upload(client, {"other.md": b"Other notes: the quokka smiles."}).json()
    other = waiting["tasks"][0]["document_id"]
    again = upload(
        client,
        {
            "guide.md": b"The guide, second edition: the numbat digs.",
            "other.md": b"Other notes: the quokka smiles.",
        },
        replace="true",
    )
    assert again.status_code == 202, again.text
    replacing, unchanged = again.json()["tasks"]
    assert (replacing["status"], replacing["document_id"], replacing["replaces_version"]) == (
        "queued",
        guide,
        1,
    )
    assert (unchanged["status"], unchanged["document_id"]) == ("duplicate", other), unchanged
    # Its batch follows the document's task, still queued.
    assert client.get(f"/tasks/{again.json()['batch_id']}/status").json()["done"] is False
    with worker.running():
        status = wait_batch(client, again.json()["batch_id"])
    assert status["status"] == "completed", status
    assert client.get(f"/documents/{guide}").json()["version"] == 2
    assert client.get(f"/documents/{other}").json()["status"] == "ready"
    assert search_ids(client, "numbat") == {guide} and search_ids(client, "wombat") == set()
    # A file holding the bytes of a new file still waiting for its document is still refused: it is not
    # what the document holds, nor yet what it will hold.
    pending = client.put(
        f"/documents/{guide}/file", files={"file": ("guide.md", b"The guide, third edition.", "text/plain")}
    )
    assert pending.status_code == 202, pending.text
    refused = upload(client, {"guide.md": b"The guide, second edition: the numbat digs."}, replace="true")
    assert refused.status_code == 409 and "still being processed" in refused.json()["detail"], refused.text
    with worker.running():
        wait_batch(client, pending.json()["batch_id"])

"""A document's life cycle overlapping another upload's (QA): a folder ingested again with `--replace`
while the first run's tasks wait, a copy of a document whose original is deleted before it was read.

The real application in this process and a real `rag-server worker` subprocess on the same database,
frozen outside `with worker.running()` ("no worker running": queued tasks stay queued), as in
test_document_lifecycle.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from starlette.testclient import TestClient

from rag_server.config import Settings
from rag_server.ingestion import locks
from tests.fakes.embedding_server import FakeEmbeddingServer
from tests.support.ingest import query, wait_batch
from tests.support.ingest import upload_named as upload
from tests.support.paused_worker import PausedWorker, one_try_settings
from tests.support.processes import settings_env


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    return one_try_settings(database_url, data_dir, fake)


@pytest.fixture(scope="module")
def client(sync_app_client: TestClient) -> TestClient:
    return sync_app_client


@pytest.fixture(scope="module")
def worker(settings: Settings, data_dir: Path) -> Iterator[PausedWorker]:
    assert settings.database_url
    with PausedWorker.start(settings_env(settings), data_dir / "worker.log", settings.database_url) as paused:
        yield paused


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


def test_a_duplicate_of_a_document_deleted_before_it_was_read_fails_with_it(
    client: TestClient, worker: PausedWorker
) -> None:
    # The same bytes sent as okapi.txt, then (still queued) as okapi-copy.txt: a duplicate. okapi.txt was
    # then deleted before any worker read it, and the copy's batch read "completed", its task "duplicate"
    # of no document: nothing of that file was stored, and `rag-server ingest` said "1 duplicate", exit 0
    # (QA). It fails as its document's task did, saying why, as when that task fails.
    content = b"Field notes about okapi stripes, sent twice under two names."
    first = upload(client, {"okapi.txt": content}).json()
    second = upload(client, {"okapi-copy.txt": content}).json()
    assert second["tasks"][0]["status"] == "duplicate", second
    assert client.delete(f"/documents/{first['tasks'][0]['document_id']}").status_code == 204
    status = client.get(f"/tasks/{second['batch_id']}/status").json()
    [task] = status["tasks"]
    assert (status["status"], status["done"], task["status"]) == ("failed", True, "failed"), status
    assert task["error"] == (
        "The same file was uploaded as 'okapi.txt', which failed: The document was deleted before processing"
        " finished. Upload this file again to process it as 'okapi-copy.txt'."
    ), task
    # Uploading it again stores it.
    third = upload(client, {"okapi-copy.txt": content}).json()
    assert third["tasks"][0]["status"] == "queued", third
    with worker.running():
        assert wait_batch(client, third["batch_id"])["status"] == "completed"


def test_a_duplicate_committed_while_the_delete_waits_for_its_document_fails_with_it(
    client: TestClient, database_url: str
) -> None:
    # An upload of the same bytes holds the document's row (as batches._add_file does) while it writes
    # its 'duplicate' task; the delete fails the duplicates it sees, then waits for that row. The
    # duplicate committed meanwhile was left 'duplicate', its document_id then NULL: its batch read
    # "completed", nothing of that file stored (review). The delete starts again and fails it too.
    content = b"Field notes about pangolin scales, sent twice while one is deleted."
    first = upload(client, {"pangolin.txt": content}).json()
    doc_id = uuid.UUID(first["tasks"][0]["document_id"])

    async def race() -> tuple[uuid.UUID, int]:
        conn = await asyncpg.connect(database_url)
        try:
            async with conn.transaction():
                collection = await conn.fetchval(
                    "SELECT collection_id FROM documents WHERE id = $1 FOR UPDATE", doc_id
                )
                batch = await conn.fetchval(
                    "INSERT INTO job_batches (collection_id) VALUES ($1) RETURNING id", collection
                )
                await conn.execute(
                    "INSERT INTO job_tasks (batch_id, document_id, filename, status, total_chunks,"
                    " completed_chunks, finished_at) VALUES ($1, $2, 'pangolin-copy.txt', 'duplicate', 0, 0,"
                    " clock_timestamp())",
                    batch,
                    doc_id,
                )
                deleting = asyncio.ensure_future(asyncio.to_thread(client.delete, f"/documents/{doc_id}"))
                # Until the delete waits for the document's row (its tasks failed already).
                for _ in range(200):
                    blocked = await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
                    )
                    if blocked:
                        break
                    await asyncio.sleep(0.05)
                assert blocked, "the delete did not wait for the document's row"
            return batch, (await deleting).status_code
        finally:
            await conn.close()

    batch, deleted = asyncio.run(race())
    assert deleted == 204
    status = client.get(f"/tasks/{batch}/status").json()
    [task] = status["tasks"]
    assert (status["status"], task["status"]) == ("failed", "failed"), status
    assert "The document was deleted before processing finished." in task["error"], task


def test_a_failed_duplicate_stays_failed_when_its_document_is_deleted(
    client: TestClient, worker: PausedWorker
) -> None:
    # The duplicate of a document that failed showed "failed" (its bytes were never read under its own
    # name) until that document was deleted: then it read "duplicate" again, its batch "completed" (QA).
    content = b"Plain field notes about tarsier eyes, sent twice under two names."
    first = upload(client, {"tarsier.pptx": content}).json()
    second = upload(client, {"tarsier.txt": content}).json()
    with worker.running():
        assert wait_batch(client, first["batch_id"])["status"] == "failed"
        failed = wait_batch(client, second["batch_id"])
    assert failed["status"] == "failed", failed
    assert client.delete(f"/documents/{first['tasks'][0]['document_id']}").status_code == 204
    after = client.get(f"/tasks/{second['batch_id']}/status").json()
    [task] = after["tasks"]
    assert (after["status"], task["status"], task["error"]) == (
        "failed",
        "failed",
        failed["tasks"][0]["error"],
    ), after
    assert task["document_id"] is None


def test_a_new_file_for_a_failed_document_holding_its_bytes_queues_it_again_as_an_upload_does(
    client: TestClient, worker: PausedWorker
) -> None:
    # Plain text sent as gibbon.pptx failed; "Replace file" on its page (PUT /documents/{id}/file) with the
    # same bytes named gibbon.txt said "Identical to version 1 of the document: nothing to replace", then
    # "failed: ... Upload this file again to process it as 'gibbon.txt'", which it had just done: the
    # document stayed failed. An upload of it (replace=true or not) queued the document again (QA).
    content = b"Plain field notes about gibbon songs at dawn."
    first = upload(client, {"gibbon.pptx": content}).json()
    with worker.running():
        assert wait_batch(client, first["batch_id"])["status"] == "failed"
    doc_id = first["tasks"][0]["document_id"]
    r = client.put(
        f"/documents/{doc_id}/file",
        files={"file": ("gibbon.txt", content, "text/plain")},
        data={"metadata": json.dumps({"fixed": True})},
    )
    assert r.status_code == 202, r.text
    [task] = r.json()["tasks"]
    assert (task["status"], task["document_id"], task["replaces_version"]) == ("queued", doc_id, None), task
    with worker.running():
        assert wait_batch(client, r.json()["batch_id"])["status"] == "completed"
    doc = client.get(f"/documents/{doc_id}").json()
    assert (doc["status"], doc["filename"], doc["metadata"], doc["version"]) == (
        "ready",
        "gibbon.txt",
        {"fixed": True},
        1,
    ), doc
    assert search_ids(client, "gibbon songs") == {doc_id}


def test_an_edit_of_a_document_whose_chunks_are_being_written_is_a_409_not_a_wait(
    client: TestClient, worker: PausedWorker, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A new version of a 12 MB file (30,000 chunks) was written in ~80 s holding its document's row (its
    # task's too): a PATCH of its metadata, or a new file for it (PUT, replace=true), waited the whole
    # RAG_API_DB_TIMEOUT_S (60 s) for that row, then was a 503 "the database did not answer in time",
    # nothing written, while the database was fine (QA; the README: 73,000 chunks write for 18 minutes).
    # They wait a few seconds (LOCK_WAIT_S), then a 409 says why. The test holds the rows as the final
    # write does (task row, then document row).
    monkeypatch.setattr(locks, "LOCK_WAIT_S", 0.5)
    first = upload(client, {"capybara.txt": b"Notes about capybara herds."}).json()
    with worker.running():
        assert wait_batch(client, first["batch_id"])["status"] == "completed"
    doc_id = first["tasks"][0]["document_id"]
    pending = client.put(
        f"/documents/{doc_id}/file",
        files={"file": ("capybara.txt", b"Notes about capybara swims.", "text/plain")},
        data={"metadata": json.dumps({"v": 2})},
    ).json()
    [task] = pending["tasks"]

    async def held() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            async with conn.transaction():
                await conn.execute(
                    "SELECT 1 FROM job_tasks WHERE id = $1 FOR UPDATE", uuid.UUID(task["task_id"])
                )
                await conn.execute("SELECT 1 FROM documents WHERE id = $1 FOR UPDATE", uuid.UUID(doc_id))
                patch = await asyncio.to_thread(
                    client.patch, f"/documents/{doc_id}", json={"metadata": {"team": "a"}, "mode": "merge"}
                )
                assert patch.status_code == 409, patch.text
                assert patch.json()["code"] == "document_busy", patch.text
                assert "being written" in patch.json()["detail"], patch.text
                bulk = await asyncio.to_thread(
                    client.post,
                    "/documents/metadata",
                    json={"documents": [{"id": doc_id, "metadata": {"team": "a"}}]},
                )
                assert bulk.status_code == 409 and "being written" in bulk.json()["detail"], bulk.text
        finally:
            await conn.close()

    asyncio.run(held())
    doc = client.get(f"/documents/{doc_id}").json()
    assert doc["metadata"] == {}, doc
    # Once the rows are free the same edit goes through, and reaches the new file waiting too.
    r = client.patch(f"/documents/{doc_id}", json={"metadata": {"team": "a"}, "mode": "merge"})
    assert r.status_code == 200, r.text
    with worker.running():
        assert wait_batch(client, pending["batch_id"])["status"] == "completed"
    assert client.get(f"/documents/{doc_id}").json()["metadata"] == {"v": 2, "team": "a"}


def test_a_new_file_for_a_document_whose_chunks_are_being_written_is_a_409_not_a_wait(
    client: TestClient, worker: PausedWorker, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(locks, "LOCK_WAIT_S", 0.5)
    first = upload(client, {"coati.txt": b"Notes about coati tails."}).json()
    with worker.running():
        assert wait_batch(client, first["batch_id"])["status"] == "completed"
    doc_id = first["tasks"][0]["document_id"]

    async def held() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            async with conn.transaction():
                await conn.execute("SELECT 1 FROM documents WHERE id = $1 FOR UPDATE", uuid.UUID(doc_id))
                put = await asyncio.to_thread(
                    client.put,
                    f"/documents/{doc_id}/file",
                    files={"file": ("coati.txt", b"Notes about coati snouts.", "text/plain")},
                )
                assert put.status_code == 409 and "being written" in put.json()["detail"], put.text
                replacing = await asyncio.to_thread(
                    upload, client, {"coati.txt": b"Notes about coati snouts."}, replace="true"
                )
                assert replacing.status_code == 409, replacing.text
                assert "being written" in replacing.json()["detail"], replacing.text
                # The same bytes again, a plain upload (a folder ingested again): it waited for the row
                # too, to RAG_API_DB_TIMEOUT_S (review).
                again = await asyncio.to_thread(
                    upload, client, {"coati-copy.txt": b"Notes about coati tails."}
                )
                assert again.status_code == 409 and again.json()["code"] == "document_busy", again.text
        finally:
            await conn.close()

    asyncio.run(held())
    assert client.get(f"/documents/{doc_id}").json()["version"] == 1
    assert (
        query(database_url, "SELECT count(*) AS n FROM job_tasks WHERE document_id = %s", doc_id)[0]["n"] == 1
    )

"""Documents over time (issue 15): metadata on upload and by PATCH, replacing a document's file.

The real application in this process, a real `rag-server worker` subprocess on the same database
(frozen outside `with worker.running()`: "no worker running" is how a test holds a replacement before
its swap), search through both native legs (BM25 and vector) with metadata filters, chat history.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
from starlette.testclient import TestClient

from rag_server.client import AsyncClient, ClientError
from rag_server.config import Settings
from rag_server.infra.queue import queue_table
from rag_server.ingestion.cli import ingest_paths
from rag_server.ingestion.deletion import DELETE_ATTEMPTS
from rag_server.ingestion.documents import sha256_hex
from rag_server.ingestion.metadata import MAX_METADATA_BYTES
from tests.fakes.embedding_server import FakeEmbeddingServer
from tests.integration.test_bm25_native import assert_stats_match_recount
from tests.support.ingest import query, wait_batch
from tests.support.ingest import upload_named as upload
from tests.support.paused_worker import PausedWorker, one_try_settings
from tests.support.processes import rag_server_cli, settings_env
from tests.support.sample_files import corrupt_pdf, long_text, pdf_with_text

LEGS = ("bm25", "vector")


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    return one_try_settings(database_url, data_dir, fake)


@pytest.fixture(scope="module")
def client(sync_app_client: TestClient) -> TestClient:
    return sync_app_client


@pytest.fixture(scope="module")
def worker(settings: Settings, data_dir: Path) -> Iterator[PausedWorker]:
    """The module's worker, frozen outside `with worker.running()`: there, as if none ran."""
    assert settings.database_url
    with PausedWorker.start(settings_env(settings), data_dir / "worker.log", settings.database_url) as paused:
        yield paused


def put_file(client: TestClient, doc_id: str, name: str, data: bytes, **form: str) -> Any:
    return client.put(f"/documents/{doc_id}/file", files={"file": (name, data, "text/plain")}, data=form)


def search(client: TestClient, text: str, leg: str, **filters: Any) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"query": text, "search_type": leg, "top_k": 50}
    if filters:
        body["filters"] = filters
    r = client.post("/search", json=body)
    assert r.status_code == 200, r.text
    return list(r.json()["results"])


def doc_ids(hits: list[dict[str, Any]]) -> set[str]:
    return {h["document_id"] for h in hits}


def text_of(marker: str) -> bytes:
    return f"{long_text(60, seed=len(marker))} The {marker} appears here. {long_text(40, seed=3)}".encode()


def stats_match_recount(database_url: str) -> None:
    async def check() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await assert_stats_match_recount(conn)
        finally:
            await conn.close()

    asyncio.run(check())


def document_count(database_url: str) -> int:
    return int(query(database_url, "SELECT count(*) AS n FROM documents")[0]["n"])


def test_metadata_on_upload_request_wide_and_per_file(client: TestClient, worker: PausedWorker) -> None:
    r = upload(
        client,
        {"meta-a.txt": text_of("okapi"), "meta-b.txt": text_of("quokka")},
        metadata=json.dumps({"team": "x", "year": 1999}),
        file_metadata=json.dumps({"meta-a.txt": {"year": 2020, "tags": ["one", "two"]}}),
    )
    assert r.status_code == 202, r.text
    ids = {t["filename"]: t["document_id"] for t in r.json()["tasks"]}
    a = client.get(f"/documents/{ids['meta-a.txt']}").json()
    b = client.get(f"/documents/{ids['meta-b.txt']}").json()
    assert a["metadata"] == {"team": "x", "year": 2020, "tags": ["one", "two"]}  # the file's key wins
    assert b["metadata"] == {"team": "x", "year": 1999}
    assert a["version"] == 1 and a["replaced_at"] is None
    with worker.running():
        assert wait_batch(client, r.json()["batch_id"])["status"] == "completed"
    for leg in LEGS:
        assert doc_ids(search(client, "okapi quokka", leg, metadata={"year": 2020})) == {ids["meta-a.txt"]}
        assert doc_ids(search(client, "okapi quokka", leg, metadata={"team": "x"})) == set(ids.values())


def test_metadata_numbers_keep_their_type_however_large(client: TestClient) -> None:
    # jsonb keeps a number's digits, not its type: 1e16 (which Python writes with an exponent) was read
    # back as the int 10000000000000000, so an exported or edited document changed its metadata's types.
    numbers = {"f": 1e16, "neg": -2.5e20, "huge": 1.5e300, "tiny": 1e-7, "i": 10**16, "whole": 3.0}
    r = upload(client, {"numbers.txt": text_of("tapir")}, metadata=json.dumps({"n": numbers}))
    assert r.status_code == 202, r.text
    doc_id = r.json()["tasks"][0]["document_id"]
    stored = client.get(f"/documents/{doc_id}").json()["metadata"]["n"]
    assert stored == numbers
    assert {k: type(v) for k, v in stored.items()} == {k: type(v) for k, v in numbers.items()}, stored
    patched = client.patch(f"/documents/{doc_id}", json={"metadata": {"g": [1e17, 10**17]}})
    assert patched.status_code == 200, patched.text
    assert [type(v) for v in client.get(f"/documents/{doc_id}").json()["metadata"]["g"]] == [float, int]


@pytest.mark.parametrize(
    ("form", "needle"),
    [
        ({"metadata": "[1, 2]"}, "must be a JSON object"),
        ({"metadata": "{not json"}, "not valid JSON"),
        ({"metadata": json.dumps({"k": "v" * MAX_METADATA_BYTES})}, "over the limit"),
        ({"metadata": "[" * 20 + "]" * 20}, "JSON object"),
        (
            {"metadata": json.dumps({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}})},
            "deeper",
        ),
        ({"metadata": '{"n": NaN}'}, "NaN"),
        ({"metadata": json.dumps({"": 1})}, "key"),
        ({"metadata": '{"s": "\\ud800"}'}, "surrogate"),
        ({"file_metadata": json.dumps({"other.txt": {"a": 1}})}, "not a file of this upload"),
        ({"file_metadata": json.dumps({"v.txt": [1]})}, "must be a JSON object"),
        ({"replace": "yes"}, "true or false"),
    ],
)
def test_metadata_validation_is_a_422_sentence_and_stores_nothing(
    client: TestClient, database_url: str, form: dict[str, str], needle: str
) -> None:
    before = document_count(database_url)
    r = upload(client, {"v.txt": b"validation text"}, **form)
    assert r.status_code == 422, r.text
    assert needle in r.json()["detail"], r.json()
    assert document_count(database_url) == before


def test_patch_metadata_updates_filters_in_both_legs(client: TestClient, worker: PausedWorker) -> None:
    r = upload(client, {"patch.txt": text_of("pangolin")}, metadata=json.dumps({"team": "red"}))
    doc_id = r.json()["tasks"][0]["document_id"]
    with worker.running():
        wait_batch(client, r.json()["batch_id"])
    for leg in LEGS:
        assert doc_id in doc_ids(search(client, "pangolin", leg, metadata={"team": "red"}))

    r = client.patch(f"/documents/{doc_id}", json={"metadata": {"team": "blue", "year": 2021}})
    assert r.status_code == 200, r.text
    assert r.json()["metadata"] == {"team": "blue", "year": 2021}
    assert client.get(f"/documents/{doc_id}").json()["metadata"] == {"team": "blue", "year": 2021}
    for leg in LEGS:
        assert doc_id not in doc_ids(search(client, "pangolin", leg, metadata={"team": "red"})), leg
        assert doc_id in doc_ids(search(client, "pangolin", leg, metadata={"team": "blue"})), leg

    r = client.patch(f"/documents/{doc_id}", json={"metadata": {"year": None, "site": "b"}, "mode": "merge"})
    assert r.status_code == 200, r.text
    assert r.json()["metadata"] == {"team": "blue", "site": "b"}
    for leg in LEGS:
        assert doc_id in doc_ids(search(client, "pangolin", leg, metadata={"site": "b", "team": "blue"}))
        assert doc_id not in doc_ids(search(client, "pangolin", leg, metadata={"year": 2021}))

    for body in (
        {"metadata": [1]},
        {"metadata": {"k": "v" * MAX_METADATA_BYTES}},
        {"metadata": {}, "mode": "x"},
    ):
        r = client.patch(f"/documents/{doc_id}", json=body)
        assert r.status_code == 422, r.text
    assert client.get(f"/documents/{doc_id}").json()["metadata"] == {"team": "blue", "site": "b"}
    r = client.patch("/documents/00000000-0000-0000-0000-000000000000", json={"metadata": {}})
    assert r.status_code == 404


def test_a_bulk_metadata_edit_sets_each_document_in_one_transaction(client: TestClient) -> None:
    """Chroma's update(ids, metadatas): each document its own metadata, replace or merge; ids of no
    document of the collection are listed, and one value refused changes nothing at all."""
    assert client.post("/collections", json={"name": "bulk-edit"}).status_code == 201
    files = {f"edit-{i}.txt": text_of(f"okapi {i}") for i in range(3)}
    r = upload(client, files, collection="bulk-edit", metadata=json.dumps({"team": "a", "n": 0}))
    ids = [t["document_id"] for t in r.json()["tasks"]]  # no worker: queued documents have metadata too

    def metadata() -> list[dict[str, Any]]:
        return [client.get(f"/documents/{i}").json()["metadata"] for i in ids]

    def edit(documents: list[dict[str, Any]], **body: Any) -> Any:
        return client.post(
            "/documents/metadata", json={"collection": "bulk-edit", "documents": documents, **body}
        )

    nowhere = "00000000-0000-0000-0000-00000000abcd"
    r = edit(
        [
            {"id": ids[0], "metadata": {"n": 1}},
            {"id": nowhere, "metadata": {}},
            {"id": ids[2], "metadata": {}},
        ],
        mode="replace",
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"updated": sorted([ids[0], ids[2]]), "not_updated": [nowhere]}
    assert metadata() == [{"n": 1}, {"team": "a", "n": 0}, {}]
    # Merge by default, as Chroma's update: keys set, null removes one, the others kept.
    r = edit([{"id": i, "metadata": {"n": None, "year": 2021}} for i in ids])
    assert r.status_code == 200 and len(r.json()["updated"]) == 3, r.text
    assert metadata() == [{"year": 2021}, {"team": "a", "year": 2021}, {"year": 2021}]
    listed = client.get("/documents", params={"collection": "bulk-edit", "metadata": '{"year": 2021}'})
    assert listed.json()["total"] == 3
    # A text match says nothing of a document with no chunks yet (queued here), $not_contains included.
    for text in ({"$contains": "okapi"}, {"$not_contains": "okapi"}):
        unread = client.get("/documents", params={"collection": "bulk-edit", "text": json.dumps(text)})
        assert unread.status_code == 200 and unread.json()["total"] == 0, (text, unread.text)
    nothing = client.post(
        "/documents/delete", json={"collection": "bulk-edit", "text": {"$not_contains": "x"}}
    )
    assert nothing.json() == {"deleted": [], "not_deleted": []}

    # The second value refused: the first is not written either.
    r = edit(
        [{"id": ids[0], "metadata": {"ok": 1}}, {"id": ids[1], "metadata": {"k": "v" * MAX_METADATA_BYTES}}]
    )
    assert r.status_code == 422 and "documents[1].metadata is" in r.json()["detail"], r.text
    for bad in (
        [],
        [{"id": ids[0], "metadata": {}}, {"id": ids[0], "metadata": {"n": 2}}],  # which would win?
        [{"id": ids[0], "metadata": [1]}],
        [{"id": ids[0], "metdata": {}}],
        [{"id": "not-a-uuid", "metadata": {}}],
    ):
        assert edit(bad).status_code == 422, bad
    assert edit([{"id": ids[0], "metadata": {}}], mode="overwrite").status_code == 422
    assert metadata() == [{"year": 2021}, {"team": "a", "year": 2021}, {"year": 2021}]
    r = client.post(
        "/documents/metadata", json={"collection": "nope", "documents": [{"id": ids[0], "metadata": {}}]}
    )
    assert r.status_code == 404


def test_replacement_keeps_the_id_and_old_text_until_the_swap(
    client: TestClient, database_url: str, worker: PausedWorker
) -> None:
    r = upload(client, {"swap.txt": text_of("zebrafish")}, metadata=json.dumps({"team": "old"}))
    doc_id = r.json()["tasks"][0]["document_id"]
    with worker.running():
        wait_batch(client, r.json()["batch_id"])
    old_chunks = client.get(f"/documents/{doc_id}").json()["chunk_count"]

    # No worker running: the replacement waits, the old version stays live.
    r = upload(client, {"swap.txt": text_of("narwhal")}, replace="true")
    assert r.status_code == 202, r.text
    (task,) = r.json()["tasks"]
    assert (task["document_id"], task["status"], task["replaces_version"]) == (doc_id, "queued", 1)
    doc = client.get(f"/documents/{doc_id}").json()
    assert (doc["version"], doc["status"], doc["chunk_count"]) == (1, "ready", old_chunks)
    shown = doc["task"]  # the new version's task, beside the version still served
    assert (shown["task_id"], shown["status"], shown["replaces_version"]) == (task["task_id"], "queued", 1)
    for leg in LEGS:
        hits = search(client, "zebrafish", leg, document_ids=[doc_id])
        assert any("zebrafish" in h["text"] for h in hits), leg
    assert not search(client, "narwhal", "bm25", document_ids=[doc_id])
    assert b"zebrafish" in client.get(f"/documents/{doc_id}/download").content
    # One active task per document: a second replacement meanwhile is refused.
    again = put_file(client, doc_id, "swap.txt", text_of("walrus"))
    assert again.status_code == 409 and "still being processed" in again.json()["detail"]

    with worker.running():
        assert wait_batch(client, r.json()["batch_id"])["status"] == "completed"
    doc = client.get(f"/documents/{doc_id}").json()
    assert (doc["id"], doc["version"], doc["status"]) == (doc_id, 2, "ready")
    assert doc["replaced_at"] is not None and doc["metadata"] == {"team": "old"}
    for leg in LEGS:
        texts = [h["text"] for h in search(client, "narwhal zebrafish", leg, document_ids=[doc_id])]
        assert texts and all("zebrafish" not in t for t in texts), leg
        assert any("narwhal" in t for t in texts) or leg == "vector"
    assert b"narwhal" in client.get(f"/documents/{doc_id}/download").content
    assert query(database_url, "SELECT new_content FROM job_tasks WHERE id = %s", task["task_id"]) == [
        {"new_content": None}
    ]
    stats_match_recount(database_url)

    # PUT: a new name, new metadata, version 3; then the same bytes again: a no-op that says so.
    r = put_file(
        client, doc_id, "swap-v3.md", b"# Third\n\nThe axolotl " + text_of("axolotl"), metadata='{"v": 3}'
    )
    assert r.status_code == 202, r.text
    with worker.running():
        wait_batch(client, r.json()["batch_id"])
    doc = client.get(f"/documents/{doc_id}").json()
    assert (doc["version"], doc["filename"], doc["file_type"], doc["metadata"]) == (
        3,
        "swap-v3.md",
        "md",
        {"v": 3},
    )
    assert doc_id in doc_ids(search(client, "axolotl", "bm25", metadata={"v": 3}))
    same = put_file(client, doc_id, "swap-v3.md", b"# Third\n\nThe axolotl " + text_of("axolotl"))
    assert same.status_code == 202, same.text
    (task,) = same.json()["tasks"]
    assert task["status"] == "duplicate" and "Identical to version 3" in task["detail"]
    assert client.get(f"/documents/{doc_id}").json()["version"] == 3
    stats_match_recount(database_url)


def test_a_failed_replacement_keeps_the_old_version(
    client: TestClient, database_url: str, worker: PausedWorker
) -> None:
    r = upload(client, {"keep.txt": text_of("capybara")})
    doc_id = r.json()["tasks"][0]["document_id"]
    with worker.running():
        wait_batch(client, r.json()["batch_id"])
        before = client.get(f"/documents/{doc_id}").json()
        r = put_file(client, doc_id, "keep.pdf", corrupt_pdf())
        assert r.status_code == 202, r.text
        status = wait_batch(client, r.json()["batch_id"])
    (task,) = status["tasks"]
    assert task["status"] == "failed" and task["error"], task
    doc = client.get(f"/documents/{doc_id}").json()
    assert doc == before  # updated_at included: the failure touched nothing of the document
    assert (doc["status"], doc["version"], doc["filename"], doc["error"]) == ("ready", 1, "keep.txt", None)
    assert doc["chunk_count"] == len(chunk_texts(database_url, doc_id)) > 0
    assert doc_id in doc_ids(search(client, "capybara", "bm25"))
    assert b"capybara" in client.get(f"/documents/{doc_id}/download").content
    stats_match_recount(database_url)


def assert_unchanged(client: TestClient, database_url: str, doc_id: str, before: Any, marker: str) -> None:
    """The document exactly as `before` (every field, updated_at too; `task` aside: a new file's task
    comes and goes), its chunks those it had, all holding `marker`'s text and found by both legs."""
    now = client.get(f"/documents/{doc_id}").json()
    assert {k: v for k, v in now.items() if k != "task"} == {k: v for k, v in before.items() if k != "task"}
    texts = chunk_texts(database_url, doc_id)
    assert len(texts) == before["chunk_count"]
    if before["status"] == "ready":
        assert any(marker in t for t in texts), texts
        for leg in LEGS:
            assert doc_id in doc_ids(search(client, marker, leg, document_ids=[doc_id])), leg
        listed = client.get("/documents", params={"status": "ready", "limit": 500}).json()["items"]
        assert doc_id in {d["id"] for d in listed}


def test_a_retried_replacement_of_a_ready_document_changes_nothing_before_its_swap(
    client: TestClient, settings: Settings, database_url: str, worker: PausedWorker
) -> None:
    # An operator's retry of a failed replacement of a ready document was refused ("ready (a later
    # upload processed it): nothing to retry"), though that document still held the old bytes: the new
    # file could only be uploaded again. Queued again, it must leave the document as it is until its swap,
    # and a second failure too. The fake embedder fails every request holding the marker six times:
    # three requests (RAG_EMBEDDING_RETRIES 2) per delivery, one failure is the limit (max attempts 1).
    r = upload(client, {"retry-ready.txt": text_of("binturong")})
    doc_id = r.json()["tasks"][0]["document_id"]
    with worker.running():
        assert wait_batch(client, r.json()["batch_id"])["status"] == "completed"
    before = client.get(f"/documents/{doc_id}").json()
    assert (before["status"], before["version"], before["error"]) == ("ready", 1, None)
    new = text_of("hoatzin") + b" FAIL503x6-retryready"
    r = put_file(client, doc_id, "retry-ready.txt", new)
    assert r.status_code == 202, r.text
    batch_id, task_id = r.json()["batch_id"], r.json()["tasks"][0]["task_id"]
    with worker.running():
        first = wait_batch(client, batch_id)
    assert first["tasks"][0]["status"] == "failed", first
    assert first["tasks"][0]["error"].startswith("Gave up after 1 attempts"), first
    assert_unchanged(client, database_url, doc_id, before, "binturong")

    # The admin route: queued again; the worker frozen, the document stays the old version.
    retried = client.post(f"/admin/tasks/{task_id}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "queued"
    assert_unchanged(client, database_url, doc_id, before, "binturong")
    with worker.running():
        second = wait_batch(client, batch_id)
    assert second["tasks"][0]["status"] == "failed", second
    assert_unchanged(client, database_url, doc_id, before, "binturong")

    # The CLI: the embedder has recovered, the retried replacement is swapped in.
    cli = rag_server_cli(settings, "tasks", "retry", task_id)
    assert cli.returncode == 0, cli.stderr
    assert_unchanged(client, database_url, doc_id, before, "binturong")
    with worker.running():
        assert wait_batch(client, batch_id)["status"] == "completed"
    doc = client.get(f"/documents/{doc_id}").json()
    assert (doc["status"], doc["version"], doc["error"]) == ("ready", 2, None)
    assert client.get(f"/documents/{doc_id}/download").content == new
    texts = chunk_texts(database_url, doc_id)
    assert doc["chunk_count"] == len(texts) > 0
    assert any("hoatzin" in t for t in texts) and not any("binturong" in t for t in texts), texts
    stats_match_recount(database_url)


def test_a_retried_replacement_needs_the_version_it_replaces(
    client: TestClient, database_url: str, worker: PausedWorker
) -> None:
    # A failed replacement of version 1, retried after another new file made version 2, would swap
    # older bytes over newer ones: refused, the document left as it is.
    r = upload(client, {"retry-stale.txt": text_of("saola")})
    doc_id = r.json()["tasks"][0]["document_id"]
    with worker.running():
        wait_batch(client, r.json()["batch_id"])
        failed = put_file(client, doc_id, "retry-stale.pdf", corrupt_pdf()).json()
        assert wait_batch(client, failed["batch_id"])["status"] == "failed"
        newer = put_file(client, doc_id, "retry-stale.txt", text_of("fossa")).json()
        assert wait_batch(client, newer["batch_id"])["status"] == "completed"
    before = client.get(f"/documents/{doc_id}").json()
    assert before["version"] == 2
    task_id = failed["tasks"][0]["task_id"]
    refused = client.post(f"/admin/tasks/{task_id}/retry")
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"] == (
        f"task {task_id} replaces version 1 of 'retry-stale.txt', which is at version 2 now: upload the"
        " file again to replace it"
    )
    assert_unchanged(client, database_url, doc_id, before, "fossa")


def new_file_kept(database_url: str, task_id: str) -> bool:
    """Whether the task row still holds a replacement's new bytes or metadata."""
    sql = "SELECT new_content IS NOT NULL OR new_metadata IS NOT NULL AS kept FROM job_tasks WHERE id = %s"
    return bool(query(database_url, sql, task_id)[0]["kept"])


def test_a_swap_drops_the_new_files_of_the_documents_earlier_failed_replacements(
    client: TestClient, database_url: str, worker: PausedWorker
) -> None:
    # A failed replacement keeps its new file for a retry; once a later one is swapped in, a retry is
    # refused (it replaces an older version), yet its bytes stayed in job_tasks for good (QA 3, a soak).
    r = upload(client, {"swap-drop.txt": text_of("hirola")})
    doc_id = r.json()["tasks"][0]["document_id"]
    with worker.running():
        wait_batch(client, r.json()["batch_id"])
        failed = put_file(client, doc_id, "swap-drop.pdf", corrupt_pdf(), metadata='{"v": 2}').json()
        assert wait_batch(client, failed["batch_id"])["status"] == "failed"
        task_id = failed["tasks"][0]["task_id"]
        assert new_file_kept(database_url, task_id)  # version 1 is current: a retry may still use it
        newer = put_file(client, doc_id, "swap-drop.txt", text_of("sitatunga")).json()
        assert wait_batch(client, newer["batch_id"])["status"] == "completed"
    assert client.get(f"/documents/{doc_id}").json()["version"] == 2
    assert not new_file_kept(database_url, task_id)
    refused = client.post(f"/admin/tasks/{task_id}/retry")
    assert refused.status_code == 409, refused.text
    assert "which is at version 2 now" in refused.json()["detail"]


def test_a_deleted_documents_replacements_keep_no_new_file(
    client: TestClient, database_url: str, worker: PausedWorker
) -> None:
    # The rows of a deleted document's tasks stay (document_id NULL): a failed replacement's new file, and
    # the one of a replacement still queued, stayed with them, though no retry can reach a deleted
    # document (QA 3: a soak's DELETEs meeting queued PUTs left their bytes behind).
    r = upload(client, {"delete-drop.txt": text_of("markhor")})
    doc_id = r.json()["tasks"][0]["document_id"]
    with worker.running():
        wait_batch(client, r.json()["batch_id"])
        failed = put_file(client, doc_id, "delete-drop.pdf", corrupt_pdf(), metadata='{"v": 2}').json()
        assert wait_batch(client, failed["batch_id"])["status"] == "failed"
    queued = put_file(client, doc_id, "delete-drop.txt", text_of("markhor v2"), metadata='{"v": 3}')
    assert queued.status_code == 202, queued.text
    failed_id, queued_id = failed["tasks"][0]["task_id"], queued.json()["tasks"][0]["task_id"]
    assert new_file_kept(database_url, failed_id) and new_file_kept(database_url, queued_id)
    before = query(database_url, "SELECT error, updated_at FROM job_tasks WHERE id = %s", failed_id)

    assert client.delete(f"/documents/{doc_id}").status_code == 204
    assert not new_file_kept(database_url, failed_id) and not new_file_kept(database_url, queued_id)
    # The failed task keeps its own failure; the queued one fails as the delete's.
    assert query(database_url, "SELECT error, updated_at FROM job_tasks WHERE id = %s", failed_id) == before
    with worker.running():
        [task] = wait_batch(client, queued.json()["batch_id"], timeout=30)["tasks"]
    assert task["status"] == "failed"
    assert task["error"] == "The document was deleted before processing finished."


def test_a_delete_locks_every_task_of_its_documents_before_the_documents(
    client: TestClient, database_url: str, worker: PausedWorker
) -> None:
    # A retry of a finished task locks its task row, then its document. The delete locked only its
    # documents' unfinished tasks first; a finished one's row was locked by ON DELETE SET NULL after the
    # document's: each waited for the other (QA 3, read from the code; PostgreSQL ended one as a deadlock).
    r = upload(client, {"lock-order.txt": text_of("solenodon")})
    doc_id = r.json()["tasks"][0]["document_id"]
    with worker.running():
        [task] = wait_batch(client, r.json()["batch_id"])["tasks"]
    assert task["status"] == "completed"
    with psycopg.connect(database_url) as hold, ThreadPoolExecutor(1) as pool:
        hold.execute("SELECT FROM job_tasks WHERE id = %s FOR UPDATE", (task["task_id"],))
        deleting = pool.submit(client.delete, f"/documents/{doc_id}")
        wait_for_lock_waiters(database_url, 1)
        # The delete waits for the task row, holding no document yet: a retry's next lock is granted.
        hold.execute("SET LOCAL lock_timeout = '5s'")
        hold.execute("SELECT FROM documents WHERE id = %s FOR UPDATE", (doc_id,))
        hold.rollback()
        assert deleting.result(timeout=60).status_code == 204
    assert client.get(f"/documents/{doc_id}").status_code == 404


def messages_of(settings: Settings, database_url: str, task_id: str) -> int:
    """The queue messages naming the task (waiting or taken; not the archive's)."""
    sql = f"SELECT count(*) AS n FROM {queue_table(settings.queue_name)} WHERE message ->> 'task_id' = %s"
    return int(query(database_url, sql, task_id)[0]["n"])


def drop_new_file(database_url: str, task_id: str) -> None:
    """A replacement's new bytes gone (removed by hand, a partial restore), as the database's owner."""
    assert query(database_url, "UPDATE job_tasks SET new_content = NULL WHERE id = %s RETURNING id", task_id)


def test_a_failed_replacement_whose_new_file_is_missing_cannot_be_retried(
    client: TestClient, settings: Settings, database_url: str, worker: PausedWorker
) -> None:
    # Queued again, it would only fail once more at its claim: refused, saying what to do, and nothing
    # changes (the task failed as it was, no message, the document as it was).
    r = upload(client, {"retry-gone.txt": text_of("pangolin")})
    doc_id = r.json()["tasks"][0]["document_id"]
    with worker.running():
        wait_batch(client, r.json()["batch_id"])
        failed = put_file(client, doc_id, "retry-gone.pdf", corrupt_pdf()).json()
        assert wait_batch(client, failed["batch_id"])["status"] == "failed"
    task_id = failed["tasks"][0]["task_id"]
    drop_new_file(database_url, task_id)
    before = client.get(f"/documents/{doc_id}").json()
    assert (before["status"], before["version"]) == ("ready", 1)
    task_before = query(database_url, "SELECT * FROM job_tasks WHERE id = %s", task_id)
    refused = client.post(f"/admin/tasks/{task_id}/retry")
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"] == (
        f"the new file of task {task_id} is missing from the database: upload it again"
    )
    assert query(database_url, "SELECT * FROM job_tasks WHERE id = %s", task_id) == task_before
    assert task_before[0]["status"] == "failed"
    assert messages_of(settings, database_url, task_id) == 0
    assert active_tasks(database_url, doc_id) == []
    assert_unchanged(client, database_url, doc_id, before, "pangolin")


def test_a_claimed_replacement_whose_new_file_is_missing_fails_alone(
    client: TestClient, settings: Settings, database_url: str, worker: PausedWorker
) -> None:
    # The worker's claim finds no bytes on the task: the task fails saying so, its message goes, and the
    # document (which never lost its own file) keeps its version, status, chunks and error.
    r = upload(client, {"claim-gone.txt": text_of("tamandua")})
    doc_id = r.json()["tasks"][0]["document_id"]
    with worker.running():
        assert wait_batch(client, r.json()["batch_id"])["status"] == "completed"
    before = client.get(f"/documents/{doc_id}").json()
    assert (before["status"], before["version"], before["error"]) == ("ready", 1, None)
    queued = put_file(client, doc_id, "claim-gone.txt", text_of("tamandua v2")).json()
    task_id = queued["tasks"][0]["task_id"]
    drop_new_file(database_url, task_id)
    with worker.running():
        ended = wait_batch(client, queued["batch_id"])
    [task] = ended["tasks"]
    assert (task["status"], task["error"], task["replaces_version"]) == (
        "failed",
        "The stored file is missing from the database; upload it again.",
        1,
    ), ended
    assert messages_of(settings, database_url, task_id) == 0
    assert active_tasks(database_url, doc_id) == []
    assert_unchanged(client, database_url, doc_id, before, "tamandua")
    stats_match_recount(database_url)


def test_a_new_file_for_a_document_in_a_folder_stays_in_that_folder(
    client: TestClient, worker: PausedWorker
) -> None:
    """A file picker sends a bare name: replacing "guides/setup.md" with "setup.md" keeps it there (it
    became a second "setup.md" of no folder). A name with folders is taken as it is."""
    r = upload(client, {"guides/setup.md": text_of("kestrel"), "notes/setup.md": text_of("merlin")})
    assert [t["filename"] for t in r.json()["tasks"]] == ["guides/setup.md", "notes/setup.md"]
    doc_id = r.json()["tasks"][0]["document_id"]
    with worker.running():
        wait_batch(client, r.json()["batch_id"])
        r = put_file(client, doc_id, "setup.md", text_of("osprey"))
        assert r.status_code == 202 and r.json()["tasks"][0]["filename"] == "guides/setup.md", r.text
        wait_batch(client, r.json()["batch_id"])
        assert client.get(f"/documents/{doc_id}").json()["filename"] == "guides/setup.md"
        r = put_file(client, doc_id, "howto/install.md", text_of("harrier"))
        wait_batch(client, r.json()["batch_id"])
    doc = client.get(f"/documents/{doc_id}").json()
    assert (doc["filename"], doc["version"]) == ("howto/install.md", 3)
    # A field it does not take (the upload's `replace`): refused, nothing queued.
    r = put_file(client, doc_id, "install.md", text_of("goshawk"), replace="true")
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == "Unknown form field 'replace': the fields are file, metadata."
    # Downloaded under the file's own name (a browser would save "howto_install.md").
    disposition = client.get(f"/documents/{doc_id}/download").headers["content-disposition"]
    assert disposition.startswith('attachment; filename="install.md";'), disposition
    # The other folder's document of the same file name is a document of its own, untouched.
    listed = client.get("/documents", params={"name": "setup.md"}).json()["items"]
    assert [(d["filename"], d["version"]) for d in listed] == [("notes/setup.md", 1)]


def test_replacement_refusals(client: TestClient, worker: PausedWorker) -> None:
    r = upload(client, {"one.txt": text_of("heron"), "two.txt": text_of("egret")})
    ids = {t["filename"]: t["document_id"] for t in r.json()["tasks"]}
    with worker.running():
        wait_batch(client, r.json()["batch_id"])
    # The bytes of another document of the collection: dedup is per collection.
    r = put_file(client, ids["one.txt"], "one.txt", text_of("egret"))
    assert r.status_code == 409 and "already stored" in r.json()["detail"]
    r = client.put(f"/documents/{ids['one.txt']}/file", files={"nope": ("x.txt", b"x", "text/plain")})
    assert r.status_code == 422 and r.json()["detail"].startswith("Unknown form field 'nope'"), r.text
    two = [("file", (name, b"x", "text/plain")) for name in ("x.txt", "y.txt")]
    r = client.put(f"/documents/{ids['one.txt']}/file", files=two)
    assert r.status_code == 422 and "exactly one file" in r.json()["detail"], r.text
    r = put_file(client, ids["one.txt"], "one.exe", b"MZ")
    assert r.status_code == 415
    r = put_file(client, "00000000-0000-0000-0000-000000000000", "one.txt", b"new text")
    assert r.status_code == 404
    # The same bytes uploaded as a new document while the replacement waits: the swap refuses (dedup
    # is per collection) and the old version stays.
    pending = put_file(client, ids["two.txt"], "two.txt", text_of("cormorant"))
    assert pending.status_code == 202, pending.text
    assert upload(client, {"four.txt": text_of("cormorant")}).status_code == 202
    with worker.running():
        (task,) = wait_batch(client, pending.json()["batch_id"])["tasks"]
    assert task["status"] == "failed" and "meanwhile" in task["error"], task
    doc = client.get(f"/documents/{ids['two.txt']}").json()
    assert (doc["version"], doc["status"]) == (1, "ready")
    assert ids["two.txt"] in doc_ids(search(client, "egret", "bm25"))
    # replace=true with a name no document has: a new document, as without it.
    r = upload(client, {"three.txt": text_of("ibis")}, replace="true")
    assert r.status_code == 202 and r.json()["tasks"][0]["document_id"] not in ids.values()


def test_chat_history_marks_an_excerpt_from_an_earlier_version(
    client: TestClient, worker: PausedWorker
) -> None:
    r = upload(client, {"cited.txt": text_of("platypus")})
    doc_id = r.json()["tasks"][0]["document_id"]
    with worker.running():
        wait_batch(client, r.json()["batch_id"])
        answer = client.post("/query", json={"query": "platypus", "filters": {"document_ids": [doc_id]}})
        assert answer.status_code == 200, answer.text
        session = answer.json()["session_id"]

        def cited() -> list[dict[str, Any]]:
            messages = client.get(f"/chat/history/{session}").json()["messages"]
            return [s for m in messages for s in m["sources"]]

        before = cited()
        assert before and all((s["document_version"], s["stale"]) == (1, False) for s in before)
        r = put_file(client, doc_id, "cited.txt", text_of("wombat"))
        wait_batch(client, r.json()["batch_id"])
    sources = cited()
    assert sources and all(
        s["stale"] and s["document_version"] == 1 and s["current_version"] == 2 for s in sources
    )
    # The excerpt is the one cited then, not the document's new text.
    assert [s["excerpt"] for s in sources] == [s["excerpt"] for s in before]
    assert all("wombat" not in s["excerpt"] for s in sources)


def live_versions(client: TestClient, doc_id: str, marker: str) -> dict[str, list[int | None]]:
    """The document versions each live answer path reports on its sources (search hits too)."""
    filters = {"document_ids": [doc_id]}
    versions: dict[str, list[int | None]] = {}
    hits = search(client, marker, "bm25", document_ids=[doc_id])
    versions["search"] = [h["document_version"] for h in hits]
    r = client.post("/query", json={"query": marker, "filters": filters})
    assert r.status_code == 200, r.text
    versions["query"] = [s["document_version"] for s in r.json()["sources"]]
    r = client.post("/query/stream", json={"query": marker, "filters": filters})
    assert r.status_code == 200, r.text
    first = r.text.split("\n\n")[0].splitlines()
    assert first[0] == "event: sources", r.text
    versions["stream"] = [
        s["document_version"] for s in json.loads(first[1].removeprefix("data: "))["sources"]
    ]
    temporary = client.post("/chat/sessions", json={"is_temporary": True}).json()["id"]
    r = client.post("/query", json={"query": marker, "filters": filters, "session_id": temporary})
    assert r.status_code == 200, r.text
    versions["temporary"] = [s["document_version"] for s in r.json()["sources"]]
    body = {"model": "rag:default:bm25", "messages": [{"role": "user", "content": marker}]}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    versions["v1"] = [s["document_version"] for s in r.json()["sources"] if s["document_id"] == doc_id]
    return versions


def test_live_answers_carry_the_version_they_cited(client: TestClient, worker: PausedWorker) -> None:
    r = upload(client, {"versioned.txt": text_of("quokka")})
    doc_id = r.json()["tasks"][0]["document_id"]
    with worker.running():
        wait_batch(client, r.json()["batch_id"])
        first = live_versions(client, doc_id, "quokka")
        assert all(v and set(v) == {1} for v in first.values()), first
        old = client.post("/query", json={"query": "quokka", "filters": {"document_ids": [doc_id]}}).json()
        r = put_file(client, doc_id, "versioned.txt", text_of("quokka numbat"))
        wait_batch(client, r.json()["batch_id"])
    second = live_versions(client, doc_id, "numbat")
    assert all(v and set(v) == {2} for v in second.values()), second
    new = client.post(
        "/query",
        json={"query": "numbat", "session_id": old["session_id"], "filters": {"document_ids": [doc_id]}},
    )
    assert new.status_code == 200, new.text
    messages = client.get(f"/chat/history/{old['session_id']}").json()["messages"]
    cited = [[(s["document_version"], s["stale"]) for s in m["sources"]] for m in messages if m["sources"]]
    assert len(cited) == 2 and cited[0] and cited[1], messages
    assert set(cited[0]) == {(1, True)} and set(cited[1]) == {(2, False)}


def test_cli_ingest_metadata_and_replace(
    client: TestClient,
    database_url: str,
    live_app_url: str,
    tmp_path: Path,
    worker: PausedWorker,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "cli-meta.txt"
    path.write_bytes(text_of("manatee"))
    assert ingest_paths([str(path)], base_url=live_app_url, wait=False, metadata="[1]") == 2
    with worker.running():
        assert ingest_paths([str(path)], base_url=live_app_url, metadata='{"team": "cli"}') == 0
        listed = client.get("/documents", params={"limit": 500}).json()["items"]
        (doc,) = [d for d in listed if d["filename"] == "cli-meta.txt"]
        assert doc["metadata"] == {"team": "cli"}
        path.write_bytes(text_of("dugong"))
        assert ingest_paths([str(path)], base_url=live_app_url, replace=True) == 0
        after = client.get(f"/documents/{doc['id']}").json()
        assert (after["version"], after["metadata"]) == (2, {"team": "cli"})  # no --metadata: kept
        path.write_bytes(text_of("platypus"))
        assert ingest_paths([str(path)], base_url=live_app_url, replace=True, metadata="{}") == 0
    cleared = client.get(f"/documents/{doc['id']}").json()
    assert (cleared["version"], cleared["metadata"]) == (3, {})  # '{}' given: cleared, as the API does
    assert doc["id"] in doc_ids(search(client, "platypus", "bm25"))
    # New bytes that are another document's: not "already stored" (they are, as another document), but
    # the server's refusal, and the document stays at version 3.
    other = tmp_path / "other.txt"
    other.write_bytes(text_of("walrus"))
    with worker.running():
        assert ingest_paths([str(other)], base_url=live_app_url) == 0
    path.write_bytes(text_of("walrus"))
    with pytest.raises(ClientError, match=r"already stored in this collection as 'other\.txt'"):
        ingest_paths([str(path)], base_url=live_app_url, replace=True)
    assert client.get(f"/documents/{doc['id']}").json()["version"] == 3
    # One file name in two sub-folders: two documents, named by their paths in the folder given, and
    # each changed file replaces its own.
    tree = tmp_path / "tree"
    for folder in ("a", "b"):
        (tree / folder).mkdir(parents=True)
        (tree / folder / "same.txt").write_bytes(text_of(f"tapir {folder}"))
    with worker.running():
        assert ingest_paths([str(tree)], base_url=live_app_url, replace=True) == 0
        named = {
            d["filename"]: d for d in client.get("/documents", params={"name": "same.txt"}).json()["items"]
        }
        assert sorted(named) == ["a/same.txt", "b/same.txt"]
        (tree / "b" / "same.txt").write_bytes(text_of("tapir b, second version"))
        assert ingest_paths([str(tree)], base_url=live_app_url, replace=True) == 0
    versions = {n: client.get(f"/documents/{d['id']}").json()["version"] for n, d in named.items()}
    assert versions == {"a/same.txt": 1, "b/same.txt": 2}
    # The same name from two folders given: refused before anything is uploaded.
    before = len(client.get("/documents", params={"limit": 500}).json()["items"])
    assert ingest_paths([str(tree / "a"), str(tree / "b")], base_url=live_app_url, replace=True) == 2
    assert len(client.get("/documents", params={"limit": 500}).json()["items"]) == before
    # Without --replace they are two documents of one name, and the run says so (both already stored
    # here, under their paths: nothing is sent).
    capsys.readouterr()
    assert ingest_paths([str(tree / "a"), str(tree / "b")], base_url=live_app_url) == 0
    assert "'same.txt' is the name of more than one file given" in capsys.readouterr().err
    # One file given by itself is named by --name: a changed b/same.txt replaces its document.
    (tree / "b" / "same.txt").write_bytes(text_of("tapir b, third version"))
    single = [str(tree / "b" / "same.txt")]
    with worker.running():
        assert ingest_paths(single, base_url=live_app_url, replace=True, name="b/same.txt") == 0
    assert client.get(f"/documents/{named['b/same.txt']['id']}").json()["version"] == 3
    for paths, name in [(single * 2, "b/same.txt"), ([str(tree)], "b/same.txt"), (single, "b/same")]:
        assert ingest_paths(paths, base_url=live_app_url, replace=True, name=name) == 2
    assert "--name 'b/same': its extension is not of a supported type" in capsys.readouterr().err
    assert len(client.get("/documents", params={"limit": 500}).json()["items"]) == before
    # A document stored before names kept their folders has its bare name: a changed file of the folder
    # is added beside it, and says so (it was silent), also with --replace; --name makes it its version.
    # A top-level file stored since ("fresh.txt") is no such document: a sub-folder's file of its name
    # is simply another document.
    r = upload(client, {"legacy.txt": text_of("okapi in the old bare-named file"), "fresh.txt": b"fresh"})
    legacy, fresh = (t["document_id"] for t in r.json()["tasks"])
    assert [t["status"] for t in r.json()["tasks"]] == ["queued"] * 2, r.text  # bytes of their own
    with psycopg.connect(database_url) as owner:  # as migration 0020 marks what was stored before it
        owner.execute("UPDATE documents SET named_before_paths = true WHERE id = %s", (legacy,))
    digest = sha256_hex(text_of("okapi, changed"))
    names = ("sub/legacy.txt", "legacy.txt", "sub/fresh.txt", "fresh.txt")
    checked = client.post(
        "/documents/check-duplicates", json={"files": [{"filename": n, "sha256": digest} for n in names]}
    ).json()["results"]
    assert [([d["id"] for d in c["same_name"]], [d["id"] for d in c["bare_name"]]) for c in checked] == [
        ([], [legacy]),
        ([legacy], []),
        ([], []),
        ([fresh], []),
    ]
    with worker.running():
        wait_batch(client, r.json()["batch_id"])
        for n, replace in enumerate((False, True)):
            (tmp_path / f"old{n}" / f"sub{n}").mkdir(parents=True)
            (tmp_path / f"old{n}" / f"sub{n}" / "legacy.txt").write_bytes(text_of(f"okapi, changed {n}"))
            capsys.readouterr()
            folder = [str(tmp_path / f"old{n}")]
            assert ingest_paths(folder, base_url=live_app_url, replace=replace, wait=False) == 0
            said = capsys.readouterr().err
            assert "has 1 document(s) named 'legacy.txt', stored before documents were named by" in said
            assert f"rag-server documents delete {legacy}" in said
        single = tmp_path / "legacy.txt"
        single.write_bytes(text_of("okapi, changed"))
        assert ingest_paths([str(single)], base_url=live_app_url, replace=True, name="legacy.txt") == 0
    # Its bytes in a folder now: stored (under its bare name), not sent again, also with --replace.
    (tmp_path / "old2" / "sub2").mkdir(parents=True)
    (tmp_path / "old2" / "sub2" / "legacy.txt").write_bytes(text_of("okapi, changed"))
    capsys.readouterr()
    assert ingest_paths([str(tmp_path / "old2")], base_url=live_app_url, replace=True) == 0
    assert "every file is already stored" in capsys.readouterr().err
    assert client.get(f"/documents/{legacy}").json()["version"] == 2


async def test_the_async_client_sets_metadata_and_replaces_a_file(live_app_url: str, tmp_path: Path) -> None:
    """The async client has the sync client's document calls (the CLI uses the sync one)."""
    path = tmp_path / "async-client.txt"
    path.write_bytes(text_of("ocelot"))
    async with AsyncClient(live_app_url) as rag:
        batch = await rag.upload([path], metadata={"team": "a"}, file_metadata={"async-client.txt": {"n": 1}})
        doc_id = str(batch.tasks[0].document_id)
        assert (await rag.document(doc_id)).metadata == {"team": "a", "n": 1}
        merged = await rag.update_metadata(doc_id, {"n": None, "m": 2}, mode="merge")
        assert merged.metadata == {"team": "a", "m": 2}
        many = await rag.update_documents(metadata={doc_id: {"m": 3}}, mode="merge")
        assert [str(i) for i in many.updated] == [doc_id] and many.not_updated == []
        assert (await rag.document(doc_id)).metadata == {"team": "a", "m": 3}
        path.write_bytes(text_of("margay"))
        with pytest.raises(ClientError) as refused:
            await rag.replace_file(doc_id, path)  # its first task is still queued: no worker here
        assert refused.value.status == 409


def test_a_patch_after_a_replacement_was_queued_wins_over_its_metadata(
    client: TestClient, database_url: str, worker: PausedWorker
) -> None:
    files = {"later.txt": text_of("tapir"), "later-merge.txt": text_of("gerenuk")}
    r = upload(client, files, metadata=json.dumps({"from": "upload"}))
    ids = [t["document_id"] for t in r.json()["tasks"]]
    with worker.running():
        wait_batch(client, r.json()["batch_id"])
    # No worker running: both replacements wait with their metadata; then each document is edited.
    batches = [
        put_file(client, ids[0], "later.txt", text_of("tapir v2"), metadata='{"from": "put"}'),
        put_file(
            client, ids[1], "later-merge.txt", text_of("gerenuk v2"), metadata='{"from": "put", "k": 1}'
        ),
    ]
    assert all(b.status_code == 202 for b in batches), [b.text for b in batches]
    # A bulk edit of both takes the same path, and locks as a delete does: every task row, then every
    # document row. Held at the second task (here), it holds no document yet: a delete holding that task
    # and wanting a document gets it (locking one document at a time, that was a deadlock).
    bulk = {"documents": [{"id": i, "metadata": {"k": None, "m": 2}} for i in ids], "mode": "merge"}
    # The task of the document locked last (ids in order): one-at-a-time locking held the other then.
    (task,) = query(
        database_url,
        "SELECT id FROM job_tasks WHERE document_id = %s::uuid AND replaces_version IS NOT NULL",
        max(ids),
    )
    with psycopg.connect(database_url) as hold, ThreadPoolExecutor(1) as pool:
        hold.execute("SELECT FROM job_tasks WHERE id = %s FOR UPDATE", (task["id"],))
        edit = pool.submit(client.post, "/documents/metadata", json=bulk)
        wait_for_lock_waiters(database_url, 1)
        hold.execute("SET LOCAL lock_timeout = '5s'")
        hold.execute("SELECT FROM documents WHERE id = ANY(%s::uuid[]) ORDER BY id FOR UPDATE", (ids,))
        hold.rollback()
        done = edit.result(timeout=60)
    assert done.status_code == 200 and done.json()["updated"] == sorted(ids), done.text
    assert client.get(f"/documents/{ids[1]}").json()["metadata"] == {"from": "upload", "m": 2}
    edit = client.patch(f"/documents/{ids[0]}", json={"metadata": {"from": "patch", "other": 1}})
    assert edit.status_code == 200 and edit.json()["metadata"] == {"from": "patch", "other": 1}
    with worker.running():
        for b in batches:
            assert wait_batch(client, b.json()["batch_id"])["status"] == "completed"
    replaced = client.get(f"/documents/{ids[0]}").json()
    assert (replaced["version"], replaced["metadata"]) == (2, {"from": "patch", "other": 1})
    # A merge applies on top of the replacement's metadata, as if the swap had come first.
    merged = client.get(f"/documents/{ids[1]}").json()
    assert (merged["version"], merged["metadata"]) == (2, {"from": "put", "m": 2})


def wait_for_lock_waiters(database_url: str, count: int) -> None:
    """Until `count` backends of this database wait for a lock (a test's held lock blocks them)."""
    sql = (
        "SELECT count(*) AS n FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(600):
        if query(database_url, sql)[0]["n"] >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{count} lock waiters never appeared")


def test_a_patch_that_meets_a_replacement_queued_while_it_waited_edits_that_replacement_too(
    client: TestClient, settings: Settings, database_url: str, worker: PausedWorker
) -> None:
    # The PATCH reads the pending replacements, then waits for the document row, which a PUT holds until
    # it commits a new replacement: the PATCH must start again and edit it too, or the swap would bring
    # back the PUT's metadata over the later edit.
    r = upload(client, {"meet.txt": text_of("dikdik")}, metadata='{"from": "upload"}')
    (doc_id,) = [t["document_id"] for t in r.json()["tasks"]]
    with worker.running():
        wait_batch(client, r.json()["batch_id"])
    with psycopg.connect(database_url) as hold, ThreadPoolExecutor(2) as pool:
        # The PUT locks the document, then waits to send its queue message.
        hold.execute(f"LOCK TABLE {queue_table(settings.queue_name)} IN EXCLUSIVE MODE")
        put = pool.submit(
            put_file, client, doc_id, "meet.txt", text_of("dikdik v2"), metadata='{"from": "put"}'
        )
        wait_for_lock_waiters(database_url, 1)
        patch = pool.submit(client.patch, f"/documents/{doc_id}", json={"metadata": {"from": "patch"}})
        wait_for_lock_waiters(database_url, 2)
        hold.rollback()
        batch = put.result(timeout=60)
        edit = patch.result(timeout=60)
    assert batch.status_code == 202 and edit.status_code == 200, (batch.text, edit.text)
    with worker.running():
        assert wait_batch(client, batch.json()["batch_id"])["status"] == "completed"
    replaced = client.get(f"/documents/{doc_id}").json()
    assert (replaced["version"], replaced["metadata"]) == (2, {"from": "patch"})


def test_a_duplicate_of_a_queued_document_is_unfinished_until_it_is_then_fails_with_it(
    client: TestClient, worker: PausedWorker
) -> None:
    # The same bytes uploaded as notes.pptx, then (still queued: no worker running) as notes.txt: the
    # second batch was "completed" at once, and stayed so when pangolin.pptx failed; its text was never read
    # under the name that would have worked (QA 4).
    content = b"Plain field notes about pangolin scales, sent twice under two names."
    first = upload(client, {"pangolin.pptx": content}).json()
    # The clients' check before sending does not call it stored (the web app and `ingest` skipped it for
    # good): it is sent, and its batch follows that document.
    [check] = client.post(
        "/documents/check-duplicates",
        json={"files": [{"filename": "pangolin.txt", "sha256": sha256_hex(content)}]},
    ).json()["results"]
    assert (check["duplicate"], check["status"]) == (False, "queued"), check
    second = upload(client, {"pangolin.txt": content}).json()
    assert second["tasks"][0]["status"] == "duplicate"
    waiting = client.get(f"/tasks/{second['batch_id']}/status").json()
    assert (waiting["done"], waiting["tasks"][0]["status"]) == (False, "queued"), waiting
    with worker.running():
        assert wait_batch(client, first["batch_id"])["status"] == "failed"
        status = wait_batch(client, second["batch_id"])
    [task] = status["tasks"]
    assert status["status"] == "failed" and task["status"] == "failed", status
    assert task["error"].startswith(
        "The same file was uploaded as 'pangolin.pptx', which failed: The file is not a PowerPoint"
    ), task
    assert task["error"].endswith("Upload this file again to process it as 'pangolin.txt'."), task


def test_a_finished_batch_holding_a_duplicate_stays_finished_when_its_document_is_queued_again(
    client: TestClient, worker: PausedWorker
) -> None:
    # The duplicate followed its document's current status: when the failed tapir.pptx was uploaded
    # again, the batch of tapir.txt went from "failed" back to "processing", after the web app and
    # `rag-server ingest` had reported it finished. It follows the task that was current when it was
    # uploaded, which is over.
    content = b"Plain field notes about tapir snouts, sent twice under two names."
    first = upload(client, {"tapir.pptx": content}).json()
    second = upload(client, {"tapir.txt": content}).json()
    assert second["tasks"][0]["status"] == "duplicate", second
    with worker.running():
        assert wait_batch(client, first["batch_id"])["status"] == "failed"
        finished = wait_batch(client, second["batch_id"])
    [duplicate] = finished["tasks"]
    assert (finished["status"], finished["done"], duplicate["status"]) == ("failed", True, "failed"), finished
    again = upload(client, {"tapir.pptx": content}).json()
    [requeued] = again["tasks"]
    assert (requeued["status"], requeued["document_id"]) == ("queued", first["tasks"][0]["document_id"])
    assert client.get(f"/tasks/{second['batch_id']}/status").json() == finished
    with worker.running():
        assert wait_batch(client, again["batch_id"])["status"] == "failed"
    assert client.get(f"/tasks/{second['batch_id']}/status").json() == finished


def test_a_duplicate_found_after_waiting_for_a_concurrent_upload_follows_that_uploads_task(
    client: TestClient, settings: Settings, database_url: str, worker: PausedWorker
) -> None:
    # The earlier upload stores its other file first (sha256 order), then waits on the later one's
    # uncommitted document for the shared file: its duplicate's transaction began before the task it
    # stands for was created. Timed by its transaction's start it would stand for no task and be
    # "done" while that document is still queued.
    shared = b"Plain notes about capybara whiskers, uploaded twice at once."
    other = b"Plain notes about capybara teeth, first of two files (1)."
    assert sha256_hex(other) < sha256_hex(shared)
    with psycopg.connect(database_url) as hold, ThreadPoolExecutor(2) as pool:
        # Each upload inserts its first document, then waits to send its queue message.
        hold.execute(f"LOCK TABLE {queue_table(settings.queue_name)} IN EXCLUSIVE MODE")
        earlier = pool.submit(upload, client, {"capybara-teeth.txt": other, "capybara.txt": shared})
        wait_for_lock_waiters(database_url, 1)
        later = pool.submit(upload, client, {"capybara-copy.txt": shared})
        wait_for_lock_waiters(database_url, 2)
        hold.rollback()
        first, second = earlier.result(timeout=60).json(), later.result(timeout=60).json()
    statuses = {t["filename"]: t["status"] for t in first["tasks"]}
    assert statuses == {"capybara-teeth.txt": "queued", "capybara.txt": "duplicate"}, first
    assert second["tasks"][0]["status"] == "queued", second
    waiting = client.get(f"/tasks/{first['batch_id']}/status").json()
    [copy] = [t for t in waiting["tasks"] if t["filename"] == "capybara.txt"]
    assert copy["status"] == "queued", waiting
    with worker.running():
        assert wait_batch(client, second["batch_id"])["status"] == "completed"
        done = wait_batch(client, first["batch_id"])
    assert done["status"] == "completed" and done["counts"]["duplicate"] == 1, done


def chunk_texts(database_url: str, doc_id: str) -> list[str]:
    rows = query(database_url, "SELECT text FROM chunks WHERE document_id = %s ORDER BY chunk_index", doc_id)
    return [r["text"] for r in rows]


def active_tasks(database_url: str, doc_id: str) -> list[dict[str, Any]]:
    sql = "SELECT id, replaces_version FROM job_tasks WHERE document_id = %s AND status = ANY(%s)"
    return query(database_url, sql, doc_id, ["queued", "processing"])


def failed_with_a_new_file_queued(
    client: TestClient, worker: PausedWorker, marker: str, new_name: str, new_bytes: bytes
) -> tuple[bytes, str, Any]:
    """A document of `marker`'s text that failed (sent as .pptx), then a new file for it queued and not
    processed yet (the worker frozen): (its bytes, its id, the replacement's upload answer)."""
    old = (
        f"{long_text(60, seed=11)} The {marker} HOLD-{marker} appears here. {long_text(40, seed=3)}".encode()
    )
    first = upload(client, {f"{marker}.pptx": old}).json()
    doc_id = first["tasks"][0]["document_id"]
    with worker.running():
        assert wait_batch(client, first["batch_id"])["status"] == "failed"
    replacement = put_file(client, doc_id, new_name, new_bytes)
    assert replacement.status_code == 202, replacement.text
    assert replacement.json()["tasks"][0]["replaces_version"] == 1
    assert client.get(f"/documents/{doc_id}").json()["status"] == "failed"  # until the swap
    return old, doc_id, replacement.json()


def assert_refused_while_replaced(
    client: TestClient, database_url: str, doc_id: str, again: Any, marker: str, new_name: str
) -> str:
    """`again` (the failed bytes uploaded as <marker>.txt) made no second active task for the document:
    a task failed at once, saying why and what to do; the reason."""
    [task] = again["tasks"]
    assert (task["status"], task["document_id"]) == ("failed", doc_id), again
    reason = task["detail"]
    assert f"{marker}.pptx" in reason and f"{new_name!r}" in reason and "waiting to replace them" in reason
    assert reason.endswith(f"upload this file again to process it as '{marker}.txt'.")
    assert [t["replaces_version"] for t in active_tasks(database_url, doc_id)] == [1]
    status = client.get(f"/tasks/{again['batch_id']}/status").json()
    assert (status["status"], status["done"], status["tasks"][0]["error"]) == ("failed", True, reason), status
    return str(reason)


def test_a_failed_documents_bytes_uploaded_while_a_new_file_for_it_waits_are_not_queued_beside_it(
    client: TestClient, settings: Settings, database_url: str, worker: PausedWorker, fake: FakeEmbeddingServer
) -> None:
    # The failed aardvark.pptx was queued again as aardvark.txt beside its pending new file: two active
    # tasks. The old bytes' task, started before the swap (held here in embedding) and finished after
    # it, left the document with the new file (bushbaby.txt, version 2) and the old bytes' chunks; taken
    # after the swap it processed the new file under the old bytes' name; either way "completed" for
    # bytes the document no longer held.
    new = text_of("bushbaby")
    old, doc_id, replacement = failed_with_a_new_file_queued(client, worker, "aardvark", "bushbaby.txt", new)
    again = upload(client, {"aardvark.txt": old}).json()
    reason = assert_refused_while_replaced(client, database_url, doc_id, again, "aardvark", "bushbaby.txt")
    with worker.running():
        assert wait_batch(client, replacement["batch_id"])["status"] == "completed"
        fake.release("aardvark")  # a task embedding the old bytes would finish now
        ended = wait_batch(client, again["batch_id"])
    assert active_tasks(database_url, doc_id) == []
    doc = client.get(f"/documents/{doc_id}").json()
    assert (doc["status"], doc["version"], doc["filename"], doc["error"]) == (
        "ready",
        2,
        "bushbaby.txt",
        None,
    )
    assert doc["sha256"] == sha256_hex(new)
    assert client.get(f"/documents/{doc_id}/download").content == new
    texts = chunk_texts(database_url, doc_id)
    assert texts and any("bushbaby" in t for t in texts) and not any("aardvark" in t for t in texts), texts
    assert doc["chunk_count"] == len(texts)
    # The refusal as it was answered, and it does not change.
    assert (ended["status"], [(t["status"], t["error"]) for t in ended["tasks"]]) == (
        "failed",
        [("failed", reason)],
    )
    stats_match_recount(database_url)

    # What it says to do works: the document holds other bytes now, so these are a document of their own.
    retried = upload(client, {"aardvark.txt": old}).json()
    [task] = retried["tasks"]
    assert task["status"] == "queued" and task["document_id"] != doc_id, retried
    # And the refused task stands for nothing: a copy of the new file is a duplicate of the ready document.
    copy = upload(client, {"bushbaby-copy.txt": new}).json()
    assert copy["tasks"][0]["status"] == "duplicate", copy
    with worker.running():
        assert wait_batch(client, retried["batch_id"])["status"] == "completed"
    assert any("aardvark" in t for t in chunk_texts(database_url, task["document_id"]))
    assert wait_batch(client, copy["batch_id"])["status"] == "completed"


def test_when_the_waiting_new_file_fails_uploading_the_old_bytes_again_queues_the_document(
    client: TestClient, database_url: str, worker: PausedWorker, fake: FakeEmbeddingServer
) -> None:
    fake.release("oryx")  # its bytes are processed in the end
    old, doc_id, replacement = failed_with_a_new_file_queued(
        client, worker, "oryx", "oryx.pdf", corrupt_pdf()
    )
    again = upload(client, {"oryx.txt": old}).json()
    reason = assert_refused_while_replaced(client, database_url, doc_id, again, "oryx", "oryx.pdf")
    with worker.running():
        assert wait_batch(client, replacement["batch_id"])["status"] == "failed"
    doc = client.get(f"/documents/{doc_id}").json()
    assert (doc["status"], doc["version"], doc["sha256"]) == ("failed", 1, sha256_hex(old))
    assert client.get(f"/tasks/{again['batch_id']}/status").json()["tasks"][0]["error"] == reason
    retried = upload(client, {"oryx.txt": old}).json()
    assert [(t["status"], t["document_id"]) for t in retried["tasks"]] == [("queued", doc_id)], retried
    with worker.running():
        assert wait_batch(client, retried["batch_id"])["status"] == "completed"
    doc = client.get(f"/documents/{doc_id}").json()
    assert (doc["status"], doc["version"], doc["filename"]) == ("ready", 1, "oryx.txt")
    assert client.get(f"/documents/{doc_id}/download").content == old
    texts = chunk_texts(database_url, doc_id)
    assert texts and any("oryx" in t for t in texts) and doc["chunk_count"] == len(texts)


@pytest.mark.parametrize("new_sorts_first", [True, False])
def test_a_replacing_upload_of_a_new_file_and_the_old_bytes_refuses_the_old_bytes_in_either_order(
    client: TestClient, database_url: str, worker: PausedWorker, new_sorts_first: bool
) -> None:
    # One replace=true upload: a failed document's new file (by its name) and its old bytes (another
    # name). Stored in sha256 order, the outcome hung on the two hashes: the new file first, the old
    # bytes were refused; the old bytes first, they queued the document again under their name, and the
    # new file became a second document instead of the document's new version.
    marker = f"tamarin{int(new_sorts_first)}"
    old = corrupt_pdf() + marker.encode()
    first = upload(client, {f"{marker}.pdf": old}).json()
    doc_id = first["tasks"][0]["document_id"]
    with worker.running():
        assert wait_batch(client, first["batch_id"])["status"] == "failed"
    new = next(
        data
        for n in range(64)
        if (sha256_hex(data := pdf_with_text([text_of(f"{marker} {n}").decode()])) < sha256_hex(old))
        == new_sorts_first
    )
    both = upload(client, {f"{marker}.txt": old, f"{marker}.pdf": new}, replace="true").json()
    refused, replacement = both["tasks"]  # the request's order
    assert (replacement["status"], replacement["document_id"], replacement["replaces_version"]) == (
        "queued",
        doc_id,
        1,
    ), both
    assert (refused["status"], refused["document_id"]) == ("failed", doc_id), both
    assert "waiting to replace them" in refused["detail"], refused
    doc = client.get(f"/documents/{doc_id}").json()
    assert (doc["filename"], doc["status"], doc["version"]) == (f"{marker}.pdf", "failed", 1)
    assert [str(t["id"]) for t in active_tasks(database_url, doc_id)] == [replacement["task_id"]]
    with worker.running():
        assert wait_batch(client, both["batch_id"])["status"] == "completed_with_errors"  # one refused
    doc = client.get(f"/documents/{doc_id}").json()
    assert (doc["filename"], doc["status"], doc["version"]) == (f"{marker}.pdf", "ready", 2)
    assert client.get(f"/documents/{doc_id}/download").content == new


def refused_retry(task_id: str, filename: str) -> str:
    return (
        f"task {task_id} was refused when {filename!r} was uploaded and holds no file of its own: upload"
        f" {filename!r} again to process it"
    )


def test_a_task_refused_at_upload_is_not_retried_under_the_documents_name(
    client: TestClient, settings: Settings, database_url: str, worker: PausedWorker, fake: FakeEmbeddingServer
) -> None:
    # `tasks retry` on a task refused at upload, once the new file in its way had failed, queued the
    # document: its old bytes as the document's margay.pptx (failing again as a presentation), not as the
    # margay.txt that upload gave, under a task named margay.txt. Refused, saying to upload the file again,
    # by the route, the CLI and a batch's retry; nothing changes, and uploading it again works.
    fake.release("margay")  # its bytes are processed in the end
    old, doc_id, replacement = failed_with_a_new_file_queued(
        client, worker, "margay", "margay.pdf", corrupt_pdf()
    )
    again = upload(client, {"margay.txt": old}).json()
    reason = assert_refused_while_replaced(client, database_url, doc_id, again, "margay", "margay.pdf")
    refused_id = again["tasks"][0]["task_id"]
    with worker.running():
        assert wait_batch(client, replacement["batch_id"])["status"] == "failed"
    before = client.get(f"/documents/{doc_id}").json()
    assert (before["status"], before["version"], before["filename"]) == ("failed", 1, "margay.pptx")
    sentence = refused_retry(refused_id, "margay.txt")
    r = client.post(f"/admin/tasks/{refused_id}/retry")
    assert r.status_code == 409, r.text
    assert r.json()["detail"] == sentence
    cli = rag_server_cli(settings, "tasks", "retry", refused_id)
    assert cli.returncode == 1 and cli.stderr.strip().endswith(sentence), cli.stderr
    bulk = client.post("/admin/tasks/retry", json={"batch_id": again["batch_id"]})
    assert bulk.json() == {
        "done": [],
        "skipped": [{"task_id": refused_id, "reason": sentence}],
        "done_count": 0,
        "skipped_count": 1,
        "truncated": False,
    }, bulk.text
    assert_unchanged(client, database_url, doc_id, before, "margay")
    assert active_tasks(database_url, doc_id) == []
    assert messages_of(settings, database_url, refused_id) == 0
    status = client.get(f"/tasks/{again['batch_id']}/status").json()
    assert (status["status"], status["tasks"][0]["status"], status["tasks"][0]["error"]) == (
        "failed",
        "failed",
        reason,
    )
    # What it says works: the document is queued as margay.txt and processed as text.
    retried = upload(client, {"margay.txt": old}).json()
    assert [(t["status"], t["document_id"]) for t in retried["tasks"]] == [("queued", doc_id)], retried
    with worker.running():
        assert wait_batch(client, retried["batch_id"])["status"] == "completed"
    doc = client.get(f"/documents/{doc_id}").json()
    assert (doc["status"], doc["version"], doc["filename"], doc["file_type"]) == (
        "ready",
        1,
        "margay.txt",
        "txt",
    )


def test_a_task_refused_at_upload_is_not_retried_once_the_new_file_was_swapped_in(
    client: TestClient, settings: Settings, database_url: str, worker: PausedWorker
) -> None:
    # The document holds the new file now, not the refused bytes: a retry has nothing of them to process
    # (and must never process the new version in their name). It said "ready (a later upload processed
    # it): nothing to retry", though no upload ever processed those bytes.
    new = text_of("numbat")
    old, doc_id, replacement = failed_with_a_new_file_queued(client, worker, "quoll", "numbat.txt", new)
    again = upload(client, {"quoll.txt": old}).json()
    assert_refused_while_replaced(client, database_url, doc_id, again, "quoll", "numbat.txt")
    refused_id = again["tasks"][0]["task_id"]
    with worker.running():
        assert wait_batch(client, replacement["batch_id"])["status"] == "completed"
    before = client.get(f"/documents/{doc_id}").json()
    assert (before["status"], before["version"], before["filename"]) == ("ready", 2, "numbat.txt")
    r = client.post(f"/admin/tasks/{refused_id}/retry")
    assert r.status_code == 409, r.text
    assert r.json()["detail"] == refused_retry(refused_id, "quoll.txt")
    assert_unchanged(client, database_url, doc_id, before, "numbat")
    assert active_tasks(database_url, doc_id) == []
    assert messages_of(settings, database_url, refused_id) == 0


def failed_and_replaced(client: TestClient, worker: PausedWorker, marker: str) -> tuple[bytes, str, Any, Any]:
    """A failed document (`failed_with_a_new_file_queued`) a corrupt PDF is queued to replace: (its bytes,
    its id, the document as it is, the replacement's upload answer)."""
    old, doc_id, replacement = failed_with_a_new_file_queued(
        client, worker, marker, f"{marker}.pdf", corrupt_pdf()
    )
    before = client.get(f"/documents/{doc_id}").json()
    assert (before["status"], before["version"], before["filename"]) == ("failed", 1, f"{marker}.pptx")
    assert before["error"] and "PowerPoint" in before["error"], before
    return old, doc_id, before, replacement


def test_a_failed_documents_error_stays_its_own_when_a_new_file_for_it_fails_or_is_cancelled(
    client: TestClient, database_url: str, worker: PausedWorker
) -> None:
    # The failed document still holds its own bytes, and its error is about them: a failing replacement
    # wrote its own reason there (the PDF's, while the document held the .pptx), a cancel "Cancelled
    # by". Both are the task's: the document stays exactly as it was.
    _, doc_id, before, replacement = failed_and_replaced(client, worker, "gecko")
    cancelled = client.post(f"/admin/tasks/{replacement['tasks'][0]['task_id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["error"] == "Cancelled by an operator."
    assert_unchanged(client, database_url, doc_id, before, "gecko")

    r = put_file(client, doc_id, "gecko.pdf", corrupt_pdf())
    assert r.status_code == 202, r.text
    with worker.running():
        ended = wait_batch(client, r.json()["batch_id"])
    (task,) = ended["tasks"]
    assert task["status"] == "failed" and "PDF" in task["error"], ended
    assert_unchanged(client, database_url, doc_id, before, "gecko")
    assert active_tasks(database_url, doc_id) == []


def test_a_retried_replacement_of_a_failed_document_leaves_it_failed_until_its_swap(
    client: TestClient, settings: Settings, database_url: str, worker: PausedWorker
) -> None:
    # An operator's retry set the document `queued` with no error before anything was swapped: its old
    # bytes uploaded meanwhile became a `duplicate` of a document "being processed" instead of refused
    # (one active task per document), and a second failure wrote the replacement's reason on it.
    old, doc_id, before, replacement = failed_and_replaced(client, worker, "kinkajou")
    batch_id, task_id = replacement["batch_id"], replacement["tasks"][0]["task_id"]
    with worker.running():
        first = wait_batch(client, batch_id)
    assert first["tasks"][0]["status"] == "failed", first
    assert_unchanged(client, database_url, doc_id, before, "kinkajou")

    cli = rag_server_cli(settings, "tasks", "retry", task_id)
    assert cli.returncode == 0, cli.stderr
    assert_unchanged(client, database_url, doc_id, before, "kinkajou")
    again = upload(client, {"kinkajou.txt": old}).json()
    assert_refused_while_replaced(client, database_url, doc_id, again, "kinkajou", "kinkajou.pdf")
    with worker.running():
        second = wait_batch(client, batch_id)
    assert second["tasks"][0]["status"] == "failed", second
    assert second["tasks"][0]["error"] == first["tasks"][0]["error"]
    assert_unchanged(client, database_url, doc_id, before, "kinkajou")

    # Retried and cancelled through the admin routes: still the task's alone.
    retried = client.post(f"/admin/tasks/{task_id}/retry")
    assert retried.status_code == 200, retried.text
    assert_unchanged(client, database_url, doc_id, before, "kinkajou")
    assert client.post(f"/admin/tasks/{task_id}/cancel").status_code == 200
    assert_unchanged(client, database_url, doc_id, before, "kinkajou")
    assert active_tasks(database_url, doc_id) == []


def test_a_delete_that_meets_a_replacement_queued_while_it_waited_fails_that_replacement_too(
    client: TestClient, settings: Settings, database_url: str, worker: PausedWorker
) -> None:
    # The DELETE fails the document's unfinished tasks, then waits for the document row, which a PUT holds
    # until it commits a new replacement task: that task, missed, outlived its document, 'queued' for good
    # (the worker dropped its message), and its batch never finished (QA 4).
    r = upload(client, {"gone.txt": text_of("klipspringer")})
    (doc_id,) = [t["document_id"] for t in r.json()["tasks"]]
    with worker.running():
        wait_batch(client, r.json()["batch_id"])
    with psycopg.connect(database_url) as hold, ThreadPoolExecutor(2) as pool:
        # The PUT locks the document, then waits to send its queue message.
        hold.execute(f"LOCK TABLE {queue_table(settings.queue_name)} IN EXCLUSIVE MODE")
        put = pool.submit(put_file, client, doc_id, "gone.txt", text_of("klipspringer v2"))
        wait_for_lock_waiters(database_url, 1)
        delete = pool.submit(client.delete, f"/documents/{doc_id}")
        wait_for_lock_waiters(database_url, 2)
        hold.rollback()
        batch = put.result(timeout=60)
        deleted = delete.result(timeout=60)
    assert batch.status_code == 202 and deleted.status_code == 204, (batch.text, deleted.text)
    assert client.get(f"/documents/{doc_id}").status_code == 404
    with worker.running():
        status = wait_batch(client, batch.json()["batch_id"], timeout=30)
    [task] = status["tasks"]
    assert (task["status"], task["error"]) == (
        "failed",
        "The document was deleted before processing finished.",
    ), task


def wait_until_blocked_by(database_url: str, pid: int, count: int) -> None:
    """Until `count` backends wait for a lock that backend `pid` holds (or is ahead of them for)."""
    sql = "SELECT count(*) AS n FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))"
    for _ in range(600):
        if query(database_url, sql, pid)[0]["n"] >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{count} backends never waited for backend {pid}")


@pytest.mark.parametrize("rounds", [DELETE_ATTEMPTS - 1, DELETE_ATTEMPTS])
def test_a_delete_that_meets_a_new_task_on_every_attempt_gives_up_with_a_409(
    client: TestClient, database_url: str, worker: PausedWorker, rounds: int
) -> None:
    # A delete starts again when a task was queued for its documents while it waited for their locks; it
    # did so for ever, holding its connection, while tasks kept coming. Here one comes during each wait
    # of `rounds`: the delete's FOR UPDATE waits for the `documents` table, which two connections hold in
    # turn (EXCLUSIVE); each is queued for it behind the delete before the other commits a queued task,
    # so it gets the table when the delete's attempt ends, before the next attempt's FOR UPDATE.
    r = upload(client, {f"busy-{rounds}.txt": text_of(f"busy {rounds}")}).json()
    [task] = r["tasks"]
    with worker.running():
        assert wait_batch(client, r["batch_id"])["status"] == "completed"
    lock = "LOCK TABLE documents IN EXCLUSIVE MODE"
    holders = [psycopg.connect(database_url), psycopg.connect(database_url)]
    try:
        with ThreadPoolExecutor(2) as pool:
            holders[0].execute(lock)
            delete = pool.submit(client.delete, f"/documents/{task['document_id']}")
            for k in range(rounds):
                holder, after = holders[k % 2], holders[(k + 1) % 2]
                wait_until_blocked_by(database_url, holder.info.backend_pid, 1)  # the delete
                taken = pool.submit(after.execute, lock)
                wait_until_blocked_by(database_url, holder.info.backend_pid, 2)  # and the next holder
                holder.execute(
                    "INSERT INTO job_tasks (batch_id, document_id, filename) VALUES (%s, %s, %s)",
                    (r["batch_id"], task["document_id"], f"busy-{rounds}.txt"),
                )
                holder.commit()
                taken.result(timeout=60)
            holders[rounds % 2].rollback()
            response = delete.result(timeout=60)
    finally:
        for h in holders:
            h.close()
    # The tasks committed meanwhile, by batch: a deleted document's tasks lose its id.
    sql = "SELECT status, error FROM job_tasks WHERE batch_id = %s AND id <> %s"
    deleted = {"status": "failed", "error": "The document was deleted before processing finished."}
    if rounds < DELETE_ATTEMPTS:
        # The last attempt met no new task: deleted, and every task queued meanwhile failed with it.
        assert response.status_code == 204, response.text
        assert client.get(f"/documents/{task['document_id']}").status_code == 404
        assert query(database_url, sql, r["batch_id"], task["task_id"]) == [deleted] * rounds
        return
    assert response.status_code == 409, response.text
    assert response.json()["detail"] == (
        "New work kept being queued for the documents while this delete waited for them "
        f"({DELETE_ATTEMPTS} times): nothing was deleted; try again."
    )
    assert client.get(f"/documents/{task['document_id']}").json()["status"] == "ready"
    queued = query(database_url, sql, r["batch_id"], task["task_id"])
    assert [t["status"] for t in queued] == ["queued"] * rounds, queued
    # Tried again with nothing new coming, it deletes the document and fails those tasks.
    assert client.delete(f"/documents/{task['document_id']}").status_code == 204
    assert client.get(f"/documents/{task['document_id']}").status_code == 404
    assert query(database_url, sql, r["batch_id"], task["task_id"]) == [deleted] * rounds


def test_empty_metadata_on_a_replacement_clears_it_and_absent_keeps_it(
    client: TestClient, worker: PausedWorker
) -> None:
    names = ["clear-put.txt", "clear-upload.txt", "keep-meta.txt"]
    r = upload(client, {n: text_of(f"gecko {n}") for n in names}, metadata=json.dumps({"team": "old"}))
    ids = {t["filename"]: t["document_id"] for t in r.json()["tasks"]}
    with worker.running():
        wait_batch(client, r.json()["batch_id"])
        batches = [
            put_file(client, ids["clear-put.txt"], "clear-put.txt", text_of("gecko put"), metadata="{}"),
            upload(client, {"clear-upload.txt": text_of("gecko upload")}, replace="true", metadata="{}"),
            upload(client, {"keep-meta.txt": text_of("gecko keep")}, replace="true"),
        ]
        for b in batches:
            assert b.status_code == 202, b.text
            assert wait_batch(client, b.json()["batch_id"])["status"] == "completed"
    after = {n: client.get(f"/documents/{ids[n]}").json() for n in names}
    assert {n: (d["version"], d["metadata"]) for n, d in after.items()} == {
        "clear-put.txt": (2, {}),
        "clear-upload.txt": (2, {}),
        "keep-meta.txt": (2, {"team": "old"}),
    }


def test_file_metadata_entries_that_clean_to_one_name_are_a_422(
    client: TestClient, database_url: str
) -> None:
    before = document_count(database_url)
    r = upload(
        client,
        {"m.txt": b"two entries for one file"},
        file_metadata=json.dumps({"dir/m.txt": {"a": 1}, "other/m.txt": {"a": 2}}),
    )
    assert r.status_code == 422, r.text
    assert "'dir/m.txt'" in r.json()["detail"] and "'other/m.txt'" in r.json()["detail"], r.json()
    assert document_count(database_url) == before


def test_a_name_twice_in_one_replacing_upload_is_a_422(client: TestClient, database_url: str) -> None:
    before = document_count(database_url)
    parts = [("files", ("twin.txt", data, "text/plain")) for data in (b"first twin", b"second twin")]
    r = client.post("/upload", files=parts, data={"replace": "true"})
    assert r.status_code == 422, r.text
    assert "'twin.txt' is given more than once" in r.json()["detail"], r.json()
    assert document_count(database_url) == before


def test_the_listing_type_filter_is_spelled_as_the_search_filter(client: TestClient) -> None:
    r = upload(client, {"typed.md": b"# Typed\n\nA listing by type."})
    doc_id = r.json()["tasks"][0]["document_id"]
    for spelling in ("md", "MD", ".md", " .Md "):
        listed = client.get("/documents", params={"type": spelling, "limit": 500}).json()["items"]
        assert doc_id in {d["id"] for d in listed}, spelling


def test_the_name_filter_finds_a_name_however_its_letters_are_composed(client: TestClient) -> None:
    """Names are stored composed (NFC); "u" + a combining diaeresis found nothing."""
    r = upload(client, {"\u00fcbersicht/pl\u00e4ne.md": text_of("kinkajou")})
    assert r.status_code == 202 and r.json()["tasks"][0]["status"] == "queued", r.text  # bytes of its own
    for part in ("u\u0308bersicht", "pla\u0308ne", "\u00fcbersicht/pl\u00e4ne"):
        listed = client.get("/documents", params={"name": part}).json()["items"]
        assert [d["filename"] for d in listed] == ["\u00fcbersicht/pl\u00e4ne.md"], part

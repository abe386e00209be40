"""Documents API (list/sort/filter/download/delete, also mid-processing), direct ingestion for the
evaluation, and `rag-server ingest` — the real application in this process, a real worker subprocess
on the same database and settings, embeddings from a local fake Ollama server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from starlette.testclient import TestClient

from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.documents import sha256_hex
from rag_server.ingestion.pipeline import DirectDocument, UnsupportedFileError, ingest_documents_direct
from rag_server.ingestion.preparation import prepare_chunks_sync
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_embedding_settings
from tests.support.ingest import (
    chunk_count,
    query,
    upload,
    upload_named,
    wait_batch,
    wait_for,
)
from tests.support.processes import Proc, settings_env, start_worker
from tests.support.sample_files import long_text, pdf_with_text

# The server's limit per file, lower than the CLI's own setting (a client on another machine).
SERVER_MAX_FILE_BYTES = 300_000


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    """The in-process app's settings, and the worker's (`settings_env`)."""
    return fake_embedding_settings(
        database_url,
        data_dir,
        fake,
        embedding_batch_size=8,
        chunk_size=128,
        worker_poll_interval_s=0.1,
        max_upload_bytes=SERVER_MAX_FILE_BYTES,
    )


@pytest.fixture(scope="module")
def env(settings: Settings) -> dict[str, str]:
    return settings_env(settings)


@pytest.fixture(scope="module")
def worker(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    proc = start_worker(env, tmp_path_factory.mktemp("logs") / "worker.log")
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def client(sync_app_client: TestClient, worker: Proc) -> TestClient:
    return sync_app_client


def first_search_text(database_url: str, document_id: UUID) -> str:
    rows = query(
        database_url,
        "SELECT search_text FROM chunks WHERE document_id = %s ORDER BY chunk_index LIMIT 1",
        document_id,
    )
    return str(rows[0]["search_text"])


@pytest.fixture(scope="module")
def uploaded(client: TestClient) -> dict[str, dict[str, Any]]:
    files = {
        "b-medium.txt": long_text(600, seed=1).encode(),
        "a-small.md": b"# Small\n\nA small markdown file.",
        "c-large.txt": long_text(1500, seed=2).encode(),
        "d-paper.pdf": pdf_with_text(["A page about otters.", "A page about beavers."]),
    }
    status = wait_batch(client, upload(client, list(files.items())).json()["batch_id"])
    assert status["status"] == "completed", status
    return {t["filename"]: {**t, "content": files[t["filename"]]} for t in status["tasks"]}


def test_list_sort_filter_paginate(client: TestClient, uploaded: dict[str, dict[str, Any]]) -> None:
    by_name = client.get("/documents", params={"sort": "name", "order": "asc"}).json()
    assert by_name["total"] == 4
    assert [d["filename"] for d in by_name["items"]] == [
        "a-small.md",
        "b-medium.txt",
        "c-large.txt",
        "d-paper.pdf",
    ]
    by_chunks = client.get("/documents", params={"sort": "chunks", "order": "desc", "type": "txt"}).json()
    assert [d["filename"] for d in by_chunks["items"]] == ["c-large.txt", "b-medium.txt"]
    assert by_chunks["items"][0]["chunk_count"] > by_chunks["items"][1]["chunk_count"] > 1
    page = client.get("/documents", params={"sort": "name", "order": "asc", "limit": 2, "offset": 2}).json()
    assert [d["filename"] for d in page["items"]] == ["c-large.txt", "d-paper.pdf"] and page["total"] == 4
    assert client.get("/documents", params={"status": "failed"}).json()["total"] == 0
    assert client.get("/documents", params={"status": "ready"}).json()["total"] == 4
    assert client.get("/documents", params={"sort": "nonsense"}).status_code == 422


def test_list_by_part_of_the_name(client: TestClient, uploaded: dict[str, dict[str, Any]]) -> None:
    def names(**params: str) -> list[str]:
        response = client.get("/documents", params={"sort": "name", "order": "asc", **params})
        assert response.status_code == 200, response.text
        return [d["filename"] for d in response.json()["items"]]

    assert names(name="SMALL") == ["a-small.md"]  # any case
    assert names(name=".txt") == ["b-medium.txt", "c-large.txt"]
    assert names(name="-", type="pdf") == ["d-paper.pdf"]  # with the other filters
    assert names(name="-", limit="1", offset="1") == ["b-medium.txt"]
    assert client.get("/documents", params={"name": ".TXT", "limit": 1}).json()["total"] == 2
    # Taken literally: LIKE's wildcards match no name here.
    assert names(name="%") == [] and names(name="_") == [] and names(name="a%l") == []
    assert names(name="otters") == []  # the name, not the text
    for bad in ("", "n" * 256):
        response = client.get("/documents", params={"name": bad})
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["query", "name"]


def test_the_name_filter_ignores_latin_accents_as_the_name_order_does(client: TestClient) -> None:
    """ "ecole" did not find "École d'été.txt": the filter lowered the name but kept its accents, while
    the name order (migration 0033) folds them."""
    assert client.post("/collections", json={"name": "accented"}).status_code == 201
    files = {"École d'été.txt": b"Summer school.", "Straße.md": b"A street.", "Ærøskøbing.txt": b"A town."}
    assert upload_named(client, files, collection="accented").status_code == 202

    def names(part: str) -> list[str]:
        response = client.get("/documents", params={"collection": "accented", "sort": "name", "name": part})
        assert response.status_code == 200, response.text
        return [d["filename"] for d in response.json()["items"]]

    assert names("ecole") == names("ÉCOLE") == names("école") == ["École d'été.txt"]
    assert names("e\u0301te\u0301") == ["École d'été.txt"]  # typed decomposed: an e and its accent
    assert names("strasse") == ["Straße.md"] and names("STRAẞE") == ["Straße.md"]
    assert names("aeroskobing") == ["Ærøskøbing.txt"]
    assert names("ecole d'ete.txt") == ["École d'été.txt"]
    assert names("ecoles") == [] and names("%") == []


def test_list_by_metadata(client: TestClient, uploaded: dict[str, dict[str, Any]]) -> None:
    """As Chroma's get(where=...): the documents whose metadata matches, with a search filter's rules."""
    tagged = {
        "a-small.md": {"team": "blue", "year": 2024, "tags": ["otters", "rivers"]},
        "b-medium.txt": {"team": "blue", "year": "2024"},
        "c-large.txt": {"team": "red", "tags": ["otters"]},
    }
    for name, metadata in tagged.items():
        doc = uploaded[name]["document_id"]
        assert client.patch(f"/documents/{doc}", json={"metadata": metadata}).status_code == 200

    def names(match: object, **params: str) -> list[str]:
        query = {"sort": "name", "order": "asc", "metadata": json.dumps(match), **params}
        response = client.get("/documents", params=query)
        assert response.status_code == 200, response.text
        return [d["filename"] for d in response.json()["items"]]

    try:
        assert names({"team": "blue"}) == ["a-small.md", "b-medium.txt"]
        assert names({"team": "blue", "year": 2024}) == ["a-small.md"]  # 2024 is not "2024"
        assert names({"tags": "otters"}) == ["a-small.md", "c-large.txt"]  # inside a list
        assert names({"tags": ["otters", "rivers"]}) == ["a-small.md"]  # all of them
        assert names({"team": "blue"}, name="medium") == ["b-medium.txt"]  # with the other filters
        assert names({"team": "green"}) == [] and names({}) == sorted(uploaded)
        for bad in (
            "not json",
            "[1, 2]",
            '{"team": {"nested": 1}}',
            json.dumps({f"k{i}": 1 for i in range(51)}),
        ):
            response = client.get("/documents", params={"metadata": bad})
            assert response.status_code == 422, (bad, response.text)
            assert response.json()["detail"][0]["loc"][:2] == ["query", "metadata"], response.text
    finally:
        for name in tagged:
            doc = uploaded[name]["document_id"]
            assert client.patch(f"/documents/{doc}", json={"metadata": {}}).status_code == 200


def test_delete_by_ids_and_by_metadata(client: TestClient, uploaded: dict[str, dict[str, Any]]) -> None:
    """As Chroma's delete(ids, where): in one collection, what the ids, the metadata or both name."""
    assert client.post("/collections", json={"name": "bulk"}).status_code == 201
    names = {
        "keep.txt": "keep",
        "one.txt": "drop",
        "two.txt": "drop",
        "three.txt": "drop",
        "four.txt": "drop",
    }
    files = [
        ("files", (n, f"{n} is about otters, {team}.".encode(), "text/plain")) for n, team in names.items()
    ]
    metadata = json.dumps({"team": "otters"})
    file_metadata = json.dumps({n: {"fate": fate} for n, fate in names.items()})
    batch = client.post(
        "/upload",
        files=files,
        data={"collection": "bulk", "metadata": metadata, "file_metadata": file_metadata},
    ).json()["batch_id"]
    ids = {t["filename"]: t["document_id"] for t in wait_batch(client, batch)["tasks"]}

    def remaining() -> list[str]:
        listed = client.get("/documents", params={"collection": "bulk", "sort": "name", "order": "asc"})
        return [d["filename"] for d in listed.json()["items"]]

    def delete(body: dict[str, Any]) -> dict[str, Any]:
        response = client.post("/documents/delete", json={"collection": "bulk", **body})
        assert response.status_code == 200, response.text
        return dict(response.json())

    nowhere = "00000000-0000-0000-0000-00000000abcd"
    assert delete({"ids": [ids["one.txt"], nowhere, ids["one.txt"]]}) == {
        "deleted": [ids["one.txt"]],
        "not_deleted": [nowhere],
    }
    # Both: a document in the list that does not match is kept.
    both = delete({"ids": [ids["keep.txt"], ids["two.txt"]], "metadata": {"fate": "drop"}})
    assert both == {"deleted": [ids["two.txt"]], "not_deleted": [ids["keep.txt"]]}
    # Another collection's document, named by id here: not deleted.
    other = uploaded["a-small.md"]["document_id"]
    assert delete({"ids": [other]}) == {"deleted": [], "not_deleted": [other]}
    assert client.get(f"/documents/{other}").status_code == 200
    # Chroma's where_document, on the documents' chunks; with a metadata match both must hold.
    four = {"$contains": "four.txt is about"}
    assert delete({"text": four, "metadata": {"fate": "keep"}}) == {"deleted": [], "not_deleted": []}
    assert delete({"text": four}) == {"deleted": [ids["four.txt"]], "not_deleted": []}
    assert delete({"metadata": {"team": "otters", "fate": "drop"}})["deleted"] == [ids["three.txt"]]
    assert remaining() == ["keep.txt"]
    # Their chunks left search with them.
    hits = client.post(
        "/search", json={"query": "otters", "collections": ["bulk"], "search_type": "bm25"}
    ).json()
    assert {h["document_name"] for h in hits["results"]} == {"keep.txt"}

    for bad in (
        {},  # nothing named: that would be every document
        {"ids": []},
        {"metadata": {}},
        {"ids": [ids["keep.txt"]], "metdata": {"fate": "drop"}},  # misspelt: refused, not ignored
        {"ids": [nowhere] * 1001},
        {"metadata": {"fate": {"nested": 1}}},
        {"text": {}},
        {"text": {"$contains": ""}},
    ):
        response = client.post("/documents/delete", json={"collection": "bulk", **bad})
        assert response.status_code == 422, (bad, response.text)
    assert client.post("/documents/delete", json={"collection": "nope", "ids": [nowhere]}).status_code == 404
    assert remaining() == ["keep.txt"]


def test_sort_by_size_type_and_status(client: TestClient, uploaded: dict[str, dict[str, Any]]) -> None:
    """Every column of the web app's documents table sorts on the server (the whole list, not a page)."""

    def listed(field: str, **params: str) -> list[Any]:
        return [d[field] for d in client.get("/documents", params=params).json()["items"]]

    by_size = sorted(uploaded, key=lambda name: len(uploaded[name]["content"]))
    assert listed("filename", sort="size", order="asc") == by_size
    assert listed("filename", sort="size", order="desc") == by_size[::-1]
    assert listed("file_type", sort="type", order="asc") == ["md", "pdf", "txt", "txt"]
    assert listed("file_type", sort="type", order="desc") == ["txt", "txt", "pdf", "md"]
    assert listed("status", sort="status") == ["ready"] * 4


def test_offset_is_bounded(client: TestClient, uploaded: dict[str, dict[str, Any]]) -> None:
    at_bound = client.get("/documents", params={"offset": 2**31 - 1})
    assert at_bound.status_code == 200 and at_bound.json()["items"] == [] and at_bound.json()["total"] == 4
    # Beyond PostgreSQL's bigint the query itself failed: a 500. Now the request is refused first.
    for offset in (2**31, 2**63, 10**30):
        response = client.get("/documents", params={"offset": offset})
        assert response.status_code == 422, (offset, response.text)
    assert client.get("/documents", params={"offset": -1}).status_code == 422


def test_openapi_declares_the_ingestion_responses(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    def responses(path: str, method: str) -> dict[str, Any]:
        declared: dict[str, Any] = paths[path][method]["responses"]
        return declared

    expected = {
        # 409: replace=true names a document still being processed, or a name several documents share.
        ("/upload", "post"): ("202", {"400", "401", "403", "404", "409", "413", "415", "422", "503"}),
        ("/documents/{document_id}", "patch"): ("200", {"400", "401", "403", "404", "409", "422", "503"}),
        ("/documents/{document_id}/file", "put"): (
            "202",
            {"400", "401", "403", "404", "409", "413", "415", "422", "503"},
        ),
        ("/documents", "get"): ("200", {"401", "404", "422", "503"}),
        ("/documents/check-duplicates", "post"): ("200", {"400", "401", "404", "422", "503"}),
        ("/documents/{document_id}", "get"): ("200", {"401", "404", "422", "503"}),
        ("/documents/{document_id}/download", "get"): ("200", {"401", "404", "422", "503"}),
        ("/tasks/{batch_id}/status", "get"): ("200", {"401", "404", "422", "503"}),
    }
    for (path, method), (ok, errors) in expected.items():
        declared = responses(path, method)
        assert set(declared) == {ok} | errors, (path, method, sorted(declared))
        content = declared[ok]["content"]
        [schema] = [c["schema"] for c in content.values()]
        assert schema and schema != {}, (path, method)
        for code in errors - {"422"}:
            error_schema = declared[code]["content"]["application/json"]["schema"]
            assert error_schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, code)
    # 409: new tasks kept being queued for the documents while the delete waited (DELETE_ATTEMPTS).
    deleting = {"401", "403", "404", "409", "422", "503"}
    assert set(responses("/documents/{document_id}", "delete")) == {"204"} | deleting
    assert set(responses("/documents/delete", "post")) == {"200", "400"} | deleting
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert {
        "UploadResponse",
        "TaskRef",
        "Document",
        "DocumentList",
        "BatchStatus",
        "DuplicateCheckResult",
    } <= set(schemas)
    assert "UploadedTask" not in schemas  # one type for an uploaded file's task


def test_get_and_download(client: TestClient, uploaded: dict[str, dict[str, Any]]) -> None:
    pdf = uploaded["d-paper.pdf"]
    doc = client.get(f"/documents/{pdf['document_id']}").json()
    assert (doc["filename"], doc["file_type"], doc["status"], doc["size_bytes"], doc["sha256"]) == (
        "d-paper.pdf",
        "pdf",
        "ready",
        len(pdf["content"]),
        sha256_hex(pdf["content"]),
    )
    download = client.get(f"/documents/{pdf['document_id']}/download")
    assert download.status_code == 200 and download.content == pdf["content"]
    assert download.headers["content-type"] == "application/pdf"
    assert download.headers["content-disposition"].startswith('attachment; filename="d-paper.pdf"')
    md = client.get(f"/documents/{uploaded['a-small.md']['document_id']}/download")
    assert md.headers["content-type"] == "text/markdown; charset=utf-8"
    missing = "00000000-0000-0000-0000-000000000000"
    assert client.get(f"/documents/{missing}").status_code == 404
    assert client.get(f"/documents/{missing}/download").status_code == 404
    assert client.get("/documents/not-a-uuid").status_code == 422


def test_chunks_are_read_in_order_and_paged(client: TestClient, uploaded: dict[str, dict[str, Any]]) -> None:
    large = uploaded["c-large.txt"]
    total = client.get(f"/documents/{large['document_id']}").json()["chunk_count"]
    first = client.get(f"/documents/{large['document_id']}/chunks", params={"limit": 2}).json()
    assert (first["total"], first["offset"], first["limit"]) == (total, 0, 2)
    assert [c["chunk_index"] for c in first["items"]] == [0, 1]
    last = client.get(f"/documents/{large['document_id']}/chunks", params={"offset": total - 1}).json()
    assert [c["chunk_index"] for c in last["items"]] == [total - 1]
    assert last["items"][0]["text"] and last["items"][0]["text"] not in first["items"][0]["text"]
    pdf = client.get(f"/documents/{uploaded['d-paper.pdf']['document_id']}/chunks").json()
    assert [c["page"] for c in pdf["items"]] == [1, 2] and "otters" in pdf["items"][0]["text"]
    # The window's end cannot overflow chunk_index (an int4): empty, not a 500.
    beyond = client.get(f"/documents/{large['document_id']}/chunks", params={"offset": 2**31 - 1})
    assert beyond.status_code == 200 and beyond.json()["items"] == []
    missing = "00000000-0000-0000-0000-000000000000"
    assert client.get(f"/documents/{missing}/chunks").status_code == 404
    assert client.get(f"/documents/{large['document_id']}/chunks", params={"limit": 201}).status_code == 422


def test_chunks_can_be_found_by_their_text(client: TestClient, uploaded: dict[str, dict[str, Any]]) -> None:
    """`text` (Chroma's where_document) keeps the document's chunks whose own text matches, in order;
    `total` counts them and `offset` skips matches."""
    url = f"/documents/{uploaded['c-large.txt']['document_id']}/chunks"
    every = client.get(url, params={"limit": 200}).json()["items"]
    assert len(every) > 4

    def found(match: dict[str, Any], **params: Any) -> dict[str, Any]:
        response = client.get(url, params={"text": json.dumps(match), **params})
        assert response.status_code == 200, response.text
        return dict(response.json())

    # A word some chunks hold and others do not.
    words = {w for c in every for w in c["text"].split()}
    word = next(w for w in sorted(words) if 1 < sum(w in c["text"] for c in every) < len(every) - 1)
    holding = [c["chunk_index"] for c in every if word in c["text"]]
    everything = found({"$contains": word}, limit=200)
    assert everything["total"] == len(holding)
    assert [c["chunk_index"] for c in everything["items"]] == holding
    rest = found({"$not_contains": word}, limit=200)
    assert [c["chunk_index"] for c in rest["items"]] == [
        c["chunk_index"] for c in every if word not in c["text"]
    ]
    # Paged over the matches.
    second = found({"$contains": word}, offset=1, limit=1)
    assert (second["total"], second["offset"], second["limit"]) == (len(holding), 1, 1)
    assert [c["chunk_index"] for c in second["items"]] == holding[1:2]
    beyond = found({"$contains": word}, offset=len(holding))
    assert (beyond["total"], beyond["items"]) == (len(holding), [])
    # Exact text, and only this document's chunks: the PDF's words are not found here.
    assert found({"$contains": word.upper() + "é"})["total"] == 0
    assert found({"$contains": "otters"})["total"] == 0
    pdf = f"/documents/{uploaded['d-paper.pdf']['document_id']}/chunks"
    otters = client.get(pdf, params={"text": '{"$or": [{"$contains": "otters"}, {"$contains": "wolves"}]}'})
    assert [c["page"] for c in otters.json()["items"]] == [1]
    # A bad match is a 422 naming where in it.
    refused = client.get(url, params={"text": '{"$regex": "a"}'})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"][:2] == ["query", "text"]
    assert client.get(url, params={"text": "otters"}).status_code == 422


def test_delete_removes_document_bytes_and_chunks(
    client: TestClient, uploaded: dict[str, dict[str, Any]], database_url: str
) -> None:
    doc_id = uploaded["b-medium.txt"]["document_id"]
    assert chunk_count(database_url, doc_id) > 0
    assert client.delete(f"/documents/{doc_id}").status_code == 204
    assert chunk_count(database_url, doc_id) == 0
    assert (
        query(database_url, "SELECT count(*) AS n FROM document_files WHERE document_id = %s::uuid", doc_id)[
            0
        ]["n"]
        == 0
    )
    assert client.get(f"/documents/{doc_id}").status_code == 404
    assert client.delete(f"/documents/{doc_id}").status_code == 404
    # The finished task keeps its history; its document link is cleared.
    task = query(
        database_url,
        "SELECT status, document_id FROM job_tasks WHERE id = %s::uuid",
        uploaded["b-medium.txt"]["task_id"],
    )[0]
    assert task == {"status": "completed", "document_id": None}


def test_delete_while_processing(client: TestClient, database_url: str) -> None:
    # The filename is in every chunk's search text; SLOW700 makes the fake backend take 0.7 s a batch.
    response = upload(client, [("SLOW700-report.txt", long_text(1200, seed=3).encode())])
    [task] = response.json()["tasks"]
    wait_for(
        lambda: (
            client.get(f"/tasks/{response.json()['batch_id']}/status").json()["tasks"][0]["completed_chunks"]
            >= 8
        ),
        timeout=60,
        what="processing started",
    )
    assert client.delete(f"/documents/{task['document_id']}").status_code == 204
    status = wait_batch(client, response.json()["batch_id"])
    [after] = status["tasks"]
    assert after["status"] == "failed"
    assert after["error"] == "The document was deleted before processing finished."
    assert chunk_count(database_url, task["document_id"]) == 0
    # The worker drops the message (at its next batch, or at the final write) and keeps working.
    wait_for(
        lambda: query(database_url, "SELECT count(*) AS n FROM pgmq.q_ingest")[0]["n"] == 0,
        timeout=60,
        what="message dropped",
    )
    assert chunk_count(database_url, task["document_id"]) == 0
    later = upload(client, [("after-delete.txt", b"The worker still works after a delete.")]).json()
    assert wait_batch(client, later["batch_id"])["status"] == "completed"


def test_a_document_deleted_while_embedding_stops_its_worker_at_the_next_batch(
    client: TestClient, database_url: str, fake: FakeEmbeddingServer
) -> None:
    # The file name is in every chunk's search text: each of its embedding requests holds at the fake
    # until released, so the delete lands while the first batch (of 8 chunks) is being embedded.
    response = upload(client, [("HOLD-dropped-report.txt", long_text(4000, seed=5).encode())])
    [task] = response.json()["tasks"]
    wait_for(lambda: fake.held["dropped"] >= 1, timeout=60, what="the first batch at the embedder")
    assert client.delete(f"/documents/{task['document_id']}").status_code == 204
    fake.release("dropped")
    wait_for(
        lambda: query(database_url, "SELECT count(*) AS n FROM pgmq.q_ingest")[0]["n"] == 0,
        timeout=60,
        what="message dropped",
    )
    [after] = wait_batch(client, response.json()["batch_id"])["tasks"]
    assert after["error"] == "The document was deleted before processing finished."
    assert after["total_chunks"] > 3 * 8  # several batches were still to come...
    # ...and none was embedded: the worker stopped when it recorded the first batch, not at the end.
    assert fake.held["dropped"] == 1
    later = upload(client, [("after-a-dropped-task.txt", b"The worker goes on after a stop.")]).json()
    assert wait_batch(client, later["batch_id"])["status"] == "completed"


def test_a_document_being_processed_shows_its_tasks_progress(
    client: TestClient, fake: FakeEmbeddingServer
) -> None:
    """A large file takes minutes: GET /documents/{id} shows how far its task is (the web app's page of a
    document uploaded elsewhere, or before a reload, said only "processing" until the end)."""
    response = upload(client, [("HOLD-progress-report.txt", long_text(4000, seed=6).encode())])
    [task] = response.json()["tasks"]
    wait_for(lambda: fake.held["progress"] >= 1, timeout=60, what="the first batch at the embedder")
    doc = client.get(f"/documents/{task['document_id']}").json()
    assert doc["status"] == "processing"
    shown = doc["task"]
    assert (shown["task_id"], shown["batch_id"]) == (task["task_id"], response.json()["batch_id"])
    assert shown["status"] == "processing" and shown["error"] is None and shown["replaces_version"] is None
    assert shown["total_chunks"] > 3 * 8 and shown["completed_chunks"] == 0
    fake.release("progress")
    assert wait_batch(client, response.json()["batch_id"])["status"] == "completed"
    done = client.get(f"/documents/{task['document_id']}").json()
    assert (done["status"], done["task"]) == ("ready", None)


def test_a_document_waiting_to_be_tried_again_shows_why(client: TestClient) -> None:
    """Between a failed attempt and the next (RAG_WORKER_RETRY_BACKOFF_S), the document's task is queued
    again and carries the error and the failure count: the page says why it is not ready yet."""
    # Three refused requests: one delivery's (RAG_EMBEDDING_RETRIES 2); the second delivery passes.
    response = upload(client, [("retried-later.txt", b"An otter holds a stone. FAIL503x3-waitingagain")])
    [task] = response.json()["tasks"]

    def waiting() -> dict[str, Any] | None:
        shown = client.get(f"/documents/{task['document_id']}").json()["task"]
        return shown if shown and shown["status"] == "queued" and shown["failures"] else None

    shown = wait_for(waiting, timeout=60, what="the task queued again after its first failure")
    assert shown["task_id"] == task["task_id"] and shown["failures"] == 1
    assert "503" in shown["error"], shown
    assert wait_batch(client, response.json()["batch_id"])["status"] == "completed"
    done = client.get(f"/documents/{task['document_id']}").json()
    assert (done["status"], done["task"]) == ("ready", None)


async def test_direct_ingestion_uses_the_same_pipeline(
    runtime: Runtime, settings: Settings, database_url: str
) -> None:
    docs = [
        DirectDocument(
            "direct-1.txt", long_text(500, seed=21).encode(), {"source": "beir", "title": "Otter Habitats"}
        ),
        DirectDocument("direct-2.md", long_text(200, seed=22).encode(), {"doc_id": "2"}),
        DirectDocument("direct-dup.txt", long_text(500, seed=21).encode(), {"doc_id": "3"}),
        DirectDocument("broken.json", b"{not json", {}),
    ]
    seen: list[int] = []
    ids = await ingest_documents_direct(runtime, docs, progress=seen.append)
    assert ids[0] == ids[2] and len(set(ids)) == 3
    assert seen[-1] == 4 and seen == sorted(seen)
    rows = {
        r["id"]: r
        for r in query(
            database_url,
            "SELECT id, status, chunk_count, metadata, error FROM documents WHERE id = ANY(%s)",
            ids,
        )
    }
    for doc, doc_id in zip(docs[:2], ids[:2], strict=True):
        expected = prepare_chunks_sync(
            settings, doc.filename, doc.content, doc.filename.rsplit(".", 1)[1], doc.metadata.get("title")
        )
        assert rows[doc_id]["status"] == "ready" and rows[doc_id]["chunk_count"] == len(expected)
        assert chunk_count(database_url, str(doc_id)) == len(expected)
    assert rows[ids[0]]["metadata"] == {"source": "beir", "title": "Otter Habitats"}
    # metadata.title is the context in the search text; without it, the filename is.
    assert first_search_text(database_url, ids[0]).startswith("Otter Habitats\n\n")
    assert first_search_text(database_url, ids[1]).startswith("direct-2.md\n\n")
    assert rows[ids[3]]["status"] == "failed" and rows[ids[3]]["error"].startswith(
        "The file is not valid JSON"
    )
    # Again: existing ids come back, nothing is embedded twice.
    assert await ingest_documents_direct(runtime, docs[:2]) == ids[:2]
    assert chunk_count(database_url, str(ids[0])) == rows[ids[0]]["chunk_count"]
    with pytest.raises(UnsupportedFileError):
        await ingest_documents_direct(runtime, [DirectDocument("x.exe", b"MZ", {})])


def test_cli_ingest_uploads_a_folder_and_waits(
    live_app_url: str, worker: Proc, env: dict[str, str], tmp_path: Path, database_url: str
) -> None:
    (tmp_path / "nested" / "deeper").mkdir(parents=True)
    (tmp_path / "one.txt").write_text(long_text(100, seed=31))
    (tmp_path / "nested" / "two.md").write_text("# Two\n\n" + long_text(100, seed=32))
    (tmp_path / "nested" / "deeper" / "three.html").write_text(f"<p>{long_text(100, seed=33)}</p>")
    (tmp_path / "nested" / "skip.bin").write_bytes(b"\x00\x01")
    (tmp_path / "nested" / "broken.json").write_text("{oops")
    # Hidden ones are left out, as the web app does: a checkout's .git, an editor's draft.
    (tmp_path / ".git" / "info").mkdir(parents=True)
    (tmp_path / ".git" / "info" / "exclude.md").write_text("# git's own notes")
    (tmp_path / "nested" / ".draft.txt").write_text(long_text(50, seed=34))
    command = [sys.executable, "-m", "rag_server", "ingest", str(tmp_path), "--url", live_app_url]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr  # broken.json failed
    assert "left out 2 hidden file(s) (names starting with '.')" in result.stderr.splitlines()
    assert "exclude.md" not in result.stderr and ".draft.txt" not in result.stderr
    assert "skipped (unsupported, missing or unreadable):" in result.stderr and "skip.bin" in result.stderr
    assert "3 completed, 1 failed" in result.stderr
    assert "failed: nested/broken.json: The file is not valid JSON" in result.stderr
    names = {
        r["filename"] for r in query(database_url, "SELECT filename FROM documents WHERE status = 'ready'")
    }
    # Named by their paths inside the folder given.
    assert {"one.txt", "nested/two.md", "nested/deeper/three.html"} <= names
    assert not {n for n in names if n.endswith(("exclude.md", ".draft.txt"))}
    # A second run skips what is stored already (the failed file is retried and fails again).
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert "3 file(s) already stored, not uploaded again" in again.stderr


def test_cli_ingest_of_a_fixed_file_replaces_its_failed_document_and_says_when_a_name_is_taken(
    live_app_url: str, worker: Proc, env: dict[str, str], tmp_path: Path, database_url: str
) -> None:
    """ "Fix the file, ingest again" left the failed document beside the fixed one (and every later
    --replace of that name was a 409); a changed file of a stored name was added beside it silently."""
    notes = tmp_path / "fixed-notes.json"
    notes.write_text('{"lemurs": "Madagascar", oops')
    command = [sys.executable, "-m", "rag_server", "ingest", str(notes), "--url", live_app_url]
    broken = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert broken.returncode == 1 and "not valid JSON" in broken.stderr, broken.stderr
    notes.write_text(json.dumps({"lemurs": "Madagascar", "notes": long_text(60, seed=51)}))
    fixed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert fixed.returncode == 0, fixed.stderr
    assert "1 file(s) replace the failed document of their name" in fixed.stderr
    sql = "SELECT status, version FROM documents WHERE filename = 'fixed-notes.json'"
    assert [(r["status"], r["version"]) for r in query(database_url, sql)] == [("ready", 2)]

    # Changed again, without --replace: added beside it, and the run says so.
    def ingest_changed(lemurs: str, seed: int) -> list[str]:
        notes.write_text(json.dumps({"lemurs": lemurs, "notes": long_text(60, seed=seed)}))
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        return run.stderr.splitlines()

    assert (
        f"{notes}: default already has a document named 'fixed-notes.json' with other content: this one is"
        " added beside it (--replace makes it a new version of that one instead)"
    ) in ingest_changed("sleep by day", 52)
    assert len(query(database_url, sql)) == 2
    # Changed once more: two documents have that name now, and --replace could not tell which is meant.
    assert (
        f"{notes}: default already has 2 documents named 'fixed-notes.json': this one is added beside them"
        " (to make it a new version of one, delete the others first: `rag-server documents list --name"
        " fixed-notes.json`, `rag-server documents delete ID`)"
    ) in ingest_changed("eat fruit", 53)


def test_cli_ingest_skips_an_empty_file_or_one_over_the_servers_limit_and_uploads_the_rest(
    live_app_url: str, worker: Proc, env: dict[str, str], tmp_path: Path, database_url: str
) -> None:
    # The CLI took the limit from its own settings (50 MB here): the server's 413 for one file stopped
    # the run before anything was uploaded. It reads the server's limits from GET /status.
    (tmp_path / "fits.txt").write_text(long_text(120, seed=41))
    (tmp_path / "too-big.txt").write_bytes(b"word " * (SERVER_MAX_FILE_BYTES // 5 + 1))
    (tmp_path / "empty.md").write_bytes(b"")  # the server refuses it, and its upload with it
    command = [sys.executable, "-m", "rag_server", "ingest", str(tmp_path), "--url", live_app_url]
    client_env = {**env, "RAG_MAX_UPLOAD_BYTES": str(50 * 1024 * 1024)}
    result = subprocess.run(command, env=client_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"skipped (over the limit of {SERVER_MAX_FILE_BYTES:,} bytes): {tmp_path / 'too-big.txt'}" in (
        result.stderr.splitlines()
    )
    assert f"skipped (empty): {tmp_path / 'empty.md'}" in result.stderr.splitlines()
    assert "1 completed" in result.stderr
    stored = {r["filename"] for r in query(database_url, "SELECT filename FROM documents")}
    assert "fits.txt" in stored and "empty.md" not in stored


def test_cli_ingest_of_a_file_named_in_latin_1_uploads_it_and_the_rest(
    live_app_url: str, worker: Proc, env: dict[str, str], tmp_path: Path, database_url: str
) -> None:
    """A folder holding one file whose name is not UTF-8 (an old archive's `café.md` in Latin-1) ended
    the whole run with a UnicodeEncodeError traceback (its name went into the JSON of check-duplicates
    as a lone surrogate), nothing uploaded. Its name's stray bytes are now U+FFFD, as a browser sends
    them, and every file goes in."""
    folder = tmp_path / "latin"
    folder.mkdir()
    (folder / "plain.md").write_text("Herons stand still in shallow water.\n")
    Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9.md")).write_text("Bitterns boom in reed beds.\n")
    command = [sys.executable, "-m", "rag_server", "ingest", str(folder), "--url", live_app_url]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "2 completed" in result.stderr, result.stderr
    names = {r["filename"] for r in query(database_url, "SELECT filename FROM documents")}
    assert {"plain.md", "caf\ufffd.md"} <= names, names

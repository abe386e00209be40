"""Upload -> pgmq -> worker -> chunks: the real application in this process, a real `rag-server worker`
subprocess on the same database and settings.

Embeddings come from a local server speaking Ollama's protocol (fast, and lets a test make the
backend fail on purpose); test_worker_kill.py covers the default local MiniLM model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from starlette.testclient import TestClient

from rag_server.config import Settings
from rag_server.ingestion.documents import sha256_hex
from rag_server.ingestion.parsing import file_type_for
from rag_server.ingestion.preparation import prepare_chunks_sync
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_embedding_settings
from tests.support.ingest import query, upload, wait_batch, wait_for
from tests.support.processes import Proc, settings_env, start_worker
from tests.support.sample_files import (
    blank_pdf,
    corrupt_pdf,
    docx_bytes,
    encrypted_pdf,
    image_only_pdf,
    long_text,
    pdf_with_text,
)

MAX_UPLOAD = 300_000


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    """The in-process app's settings, and the worker's (`settings_env`)."""
    return fake_embedding_settings(
        database_url,
        data_dir,
        fake,
        max_upload_bytes=MAX_UPLOAD,
        max_upload_request_bytes=5 * MAX_UPLOAD,
        chunk_size=128,
        chunk_overlap=16,
        embedding_batch_size=16,
        embedding_retries=0,
        worker_max_attempts=3,
        worker_retry_backoff_s=0,
        worker_poll_interval_s=0.1,
        worker_concurrency=2,
    )


@pytest.fixture(scope="module")
def worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    proc = start_worker(settings_env(settings), tmp_path_factory.mktemp("logs") / "worker.log")
    # Ready before the tests: stopped while it still starts (a `-k` of quick tests), it dies by SIGTERM.
    wait_for(lambda: "worker ready" in proc.log() or proc.popen.poll() is not None, 120, "worker ready")
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def client(sync_app_client: TestClient, worker: Proc) -> TestClient:
    return sync_app_client


def document_count(database_url: str) -> int:
    return int((query(database_url, "SELECT count(*) AS n FROM documents"))[0]["n"])


SAMPLES: dict[str, bytes] = {
    "notes.txt": long_text(900, seed=11).encode(),
    "guide.md": ("# Field Guide\n\n" + long_text(400, seed=12)).encode(),
    "report.pdf": pdf_with_text([long_text(300, seed=13), long_text(250, seed=14)]),
    "page.html": (
        f"<html><head><title>Web Page</title></head><body><p>{long_text(300, seed=15)}</p></body></html>"
    ).encode(),
    "letter.docx": docx_bytes([long_text(200, seed=16), long_text(150, seed=17)]),
    "table.csv": ("id,species,habitat\n" + "\n".join(f"{i},otter {i},river {i}" for i in range(60))).encode(),
    "data.json": json.dumps(
        {"items": [{"name": f"item {i}", "note": long_text(10, seed=i)} for i in range(30)]}
    ).encode(),
}


def test_every_supported_type_becomes_exactly_the_expected_chunks(
    client: TestClient, database_url: str, settings: Settings
) -> None:
    response = upload(client, list(SAMPLES.items()))
    assert response.status_code == 202, response.text
    body = response.json()
    assert [t["filename"] for t in body["tasks"]] == list(SAMPLES)
    assert {t["status"] for t in body["tasks"]} == {"queued"}

    status = wait_batch(client, body["batch_id"])
    assert status["status"] == "completed", status
    assert status["counts"]["completed"] == len(SAMPLES)
    for task in status["tasks"]:
        name = task["filename"]
        file_type = file_type_for(name)
        assert file_type is not None
        expected = prepare_chunks_sync(settings, name, SAMPLES[name], file_type.name)
        assert task["total_chunks"] == task["completed_chunks"] == len(expected) > 0, task
        assert task["attempts"] == 1 and task["error"] is None
        rows = query(
            database_url,
            "SELECT chunk_index, text, search_text, page, char_start, char_end FROM chunks "
            "WHERE document_id = %s ORDER BY chunk_index",
            task["document_id"],
        )
        assert [(r["chunk_index"], r["text"], r["search_text"], r["page"]) for r in rows] == [
            (c.index, c.text, c.search_text, c.page) for c in expected
        ]
        doc = client.get(f"/documents/{task['document_id']}").json()
        assert doc["status"] == "ready" and doc["chunk_count"] == len(expected)
    # Title context reaches the search text; PDF chunks know their page.
    pdf_task = next(t for t in status["tasks"] if t["filename"] == "report.pdf")
    pages = query(
        database_url, "SELECT DISTINCT page FROM chunks WHERE document_id = %s::uuid", pdf_task["document_id"]
    )
    assert sorted(r["page"] for r in pages) == [1, 2]
    html_rows = query(
        database_url,
        "SELECT search_text FROM chunks c JOIN documents d ON d.id = c.document_id "
        "WHERE d.filename = 'page.html' LIMIT 1",
    )
    assert html_rows[0]["search_text"].startswith("Web Page\n\n")


@pytest.mark.parametrize(
    ("filename", "content", "reason"),
    [
        ("corrupt.pdf", corrupt_pdf(), "The PDF is damaged or not a PDF and could not be read"),
        ("locked.pdf", encrypted_pdf(), "The PDF is password-protected; upload an unprotected copy."),
        ("scan.pdf", image_only_pdf(), "The PDF has no extractable text layer"),
        ("blank.pdf", blank_pdf(), "The PDF has no extractable text layer"),
        ("bad.json", b'{"unterminated": ', "The file is not valid JSON"),
    ],
)
def test_bad_files_fail_their_task_with_a_reason_and_no_chunks(
    client: TestClient, database_url: str, filename: str, content: bytes, reason: str
) -> None:
    response = upload(client, [(filename, content)])
    assert response.status_code == 202, response.text
    status = wait_batch(client, response.json()["batch_id"])
    [task] = status["tasks"]
    assert status["status"] == "failed"
    assert task["status"] == "failed" and task["error"].startswith(reason), task
    assert task["attempts"] == 1  # deterministic: never retried
    doc = client.get(f"/documents/{task['document_id']}").json()
    assert doc["status"] == "failed" and doc["error"] == task["error"]
    chunks = query(database_url, "SELECT id FROM chunks WHERE document_id = %s::uuid", task["document_id"])
    assert chunks == []
    archived = query(database_url, "SELECT count(*) AS n FROM pgmq.a_ingest")
    assert archived[0]["n"] >= 1
    # This task's own message was archived (the count above is shared by every case of the module).
    mine = query(
        database_url,
        "SELECT count(*) AS n FROM pgmq.a_ingest a JOIN job_tasks t ON t.msg_id = a.msg_id WHERE t.id = %s",
        task["task_id"],
    )
    assert mine[0]["n"] == 1


def test_unsupported_extension_is_415_and_stores_nothing(client: TestClient, database_url: str) -> None:
    before = document_count(database_url)
    response = upload(client, [("fine.txt", b"a fine file"), ("virus.exe", b"MZ..."), ("x.png", b"\x89PNG")])
    assert response.status_code == 415
    assert response.json()["detail"].startswith("Unsupported file type: virus.exe, x.png. Supported: .csv")
    assert document_count(database_url) == before


def test_an_empty_file_is_422_naming_it_and_stores_nothing(client: TestClient, database_url: str) -> None:
    before = document_count(database_url)
    response = upload(client, [("ok.txt", b"small and fine"), ("zero.pdf", b"")])
    assert response.status_code == 422
    assert response.json()["detail"] == "zero.pdf is empty (0 bytes): there is nothing in it to read."
    assert document_count(database_url) == before


def test_an_unknown_collection_is_404_before_the_files_are_read(client: TestClient) -> None:
    """The collection is looked up before the files' bytes are read into the server's memory (an upload
    into a collection the key cannot reach held them all, 392 MB each, to answer 404): an empty file,
    refused only once it is read, is not reached."""
    files = [("files", ("zero.txt", b"", "text/plain"))]
    response = client.post("/upload", files=files, data={"collection": "no-such-collection"})
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "collection_not_found"


def test_file_over_the_limit_is_413_and_stores_nothing(client: TestClient, database_url: str) -> None:
    before = document_count(database_url)
    response = upload(client, [("ok.txt", b"small and fine"), ("huge.txt", b"x" * (MAX_UPLOAD + 1))])
    assert response.status_code == 413
    # One byte over: in bytes, since both round to the same MB ("0.3 MB, over the limit of 0.3 MB").
    assert (
        response.json()["detail"]
        == f"huge.txt is {MAX_UPLOAD + 1:,} bytes, over the limit of {MAX_UPLOAD:,} bytes."
    )
    assert document_count(database_url) == before


def test_request_over_the_total_limit_is_413_before_reading(client: TestClient, database_url: str) -> None:
    before = document_count(database_url)
    files = [
        (f"part{i}.txt", bytes([65 + i]) * (MAX_UPLOAD - 1000)) for i in range(6)
    ]  # each under the limit
    response = upload(client, files)
    assert response.status_code == 413
    assert response.json()["detail"].endswith(
        "over the limit of 1.4 MB per request; send the files in several uploads."
    )
    assert document_count(database_url) == before


def test_chunked_request_over_the_total_limit_is_413(client: TestClient, database_url: str) -> None:
    """Without Content-Length (chunked body) the total is counted while reading the parts."""
    before = document_count(database_url)
    parts = [
        b'--XyZ\r\nContent-Disposition: form-data; name="files"; filename="chunk%d.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\n" % i + bytes([65 + i]) * (MAX_UPLOAD - 1000) + b"\r\n"
        for i in range(6)
    ]

    def body() -> Iterator[bytes]:
        yield from parts
        yield b"--XyZ--\r\n"

    response = client.post(
        "/upload", content=body(), headers={"content-type": "multipart/form-data; boundary=XyZ"}
    )
    assert response.status_code == 413, response.text
    assert response.json()["detail"] == (
        "The upload is over the limit of 1.4 MB per request; send the files in several uploads."
    )
    assert document_count(database_url) == before


def test_more_files_than_the_limit_is_one_413_naming_the_limit(
    client: TestClient, settings: Settings, database_url: str
) -> None:
    # Two over the limit was Starlette's 400 "Maximum number of files is 1001" (the limit is 1000).
    most = settings.max_files_per_upload
    before = document_count(database_url)
    for n in (most + 1, most + 2, most + 40):
        files = [("files", (f"many-{i}.txt", f"file {i}".encode(), "text/plain")) for i in range(n)]
        response = client.post("/upload", files=files)
        assert response.status_code == 413, (n, response.text)
        assert response.json() == {
            "detail": f"Too many files in one upload: over the limit of {most}; send them in several."
        }
    assert document_count(database_url) == before
    # PUT /documents/{id}/file takes one file: two or three is the same sentence (three was a 400
    # saying the maximum is 2), before the document is even looked up.
    for n in (2, 3, 5):
        files = [("file", (f"new-{i}.txt", b"new text", "text/plain")) for i in range(n)]
        response = client.put(f"/documents/{uuid4()}/file", files=files)
        assert response.status_code == 422, (n, response.text)
        assert response.json() == {"detail": "Send exactly one file, in the multipart field 'file'."}


def test_no_files_is_422(client: TestClient) -> None:
    response = client.post("/upload", data={"collection": "default"})
    assert response.status_code == 422
    assert response.json()["detail"] == "Send at least one file in the multipart field 'files'."


def test_a_form_field_the_upload_does_not_take_is_422_and_stores_nothing(
    client: TestClient, database_url: str
) -> None:
    # Misspelt, the collection was ignored and the files went into `default`.
    before = document_count(database_url)
    files = [("files", ("misspelt.txt", b"a misspelt collection field", "text/plain"))]
    response = client.post("/upload", files=files, data={"colection": "hr", "replace": "false"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == (
        "Unknown form field 'colection': the fields are files, collection, metadata, file_metadata, replace."
    )
    # A file under the PUT's field name.
    response = client.post("/upload", files=[("file", ("one.txt", b"one", "text/plain"))])
    assert response.status_code == 422
    assert response.json()["detail"].startswith("Unknown form field 'file': the fields are files,")
    assert document_count(database_url) == before


def test_a_query_parameter_the_upload_does_not_take_is_422_and_stores_nothing(
    client: TestClient, database_url: str
) -> None:
    # The collection is a form field: given in the URL, it used to be ignored and the files went
    # into `default`.
    before = document_count(database_url)
    files = [("files", ("in-the-url.txt", b"a collection given in the url", "text/plain"))]
    response = client.post("/upload?collection=hr&replace=true", files=files)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert [(e["loc"], e["input"]) for e in errors] == [
        (["query", "collection"], "hr"),
        (["query", "replace"], "true"),
    ]
    assert (
        errors[0]["msg"]
        == "not a query parameter of this route: it takes none (the upload's fields are form fields)"
    )
    assert document_count(database_url) == before


def test_filenames_are_sanitised_for_display(client: TestClient) -> None:
    # Built by hand: httpx would percent-encode the control characters a hostile client can send raw.
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="files"; filename="../../etc/evil\x1b[2J\x07\x7f.txt"'
        b"\r\nContent-Type: text/plain\r\n\r\npath traversal attempt text\r\n--XyZ--\r\n"
    )
    response = client.post(
        "/upload", content=body, headers={"content-type": "multipart/form-data; boundary=XyZ"}
    )
    assert response.status_code == 202
    [task] = response.json()["tasks"]
    assert task["filename"] == "evil[2J.txt"
    status = wait_batch(client, response.json()["batch_id"])
    assert status["tasks"][0]["status"] == "completed"
    download = client.get(f"/documents/{task['document_id']}/download")
    assert download.content == b"path traversal attempt text"
    assert 'filename="evil[2J.txt"' in download.headers["content-disposition"]


def test_a_file_name_over_the_parsers_header_limit_is_a_400_saying_so(
    client: TestClient, database_url: str
) -> None:
    before = document_count(database_url)
    response = client.post("/upload", files=[("files", ("n" * 5000 + ".txt", b"text", "text/plain"))])
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("A part's header line is over 4 KiB"), response.json()
    assert document_count(database_url) == before


def test_non_utf8_text_is_decoded(client: TestClient, database_url: str) -> None:
    content = ("Crème brûlée and café au lait are served. " * 5).encode("cp1252")
    response = upload(client, [("menu.txt", content)])
    status = wait_batch(client, response.json()["batch_id"])
    assert status["tasks"][0]["status"] == "completed"
    rows = query(
        database_url,
        "SELECT text FROM chunks WHERE document_id = %s::uuid",
        status["tasks"][0]["document_id"],
    )
    assert "Crème brûlée and café au lait" in rows[0]["text"]


def test_duplicates_within_a_batch_and_across_batches(client: TestClient, database_url: str) -> None:
    content = long_text(120, seed=99).encode()
    first = upload(client, [("one.txt", content), ("same-again.txt", content)]).json()
    assert [t["status"] for t in first["tasks"]] == ["queued", "duplicate"]
    assert first["tasks"][0]["document_id"] == first["tasks"][1]["document_id"]
    done = wait_batch(client, first["batch_id"])
    assert done["status"] == "completed" and done["counts"] == {
        "queued": 0,
        "processing": 0,
        "completed": 1,
        "failed": 0,
        "duplicate": 1,
    }

    again = upload(client, [("renamed.txt", content)]).json()
    [task] = again["tasks"]
    assert task["status"] == "duplicate" and task["document_id"] == first["tasks"][0]["document_id"]
    docs = query(database_url, "SELECT id FROM documents WHERE sha256 = %s", sha256_hex(content))
    assert len(docs) == 1
    check = client.post(
        "/documents/check-duplicates",
        json={
            "files": [
                {"filename": "x.txt", "sha256": sha256_hex(content)},
                {"filename": "new.txt", "sha256": "0" * 64},
            ]
        },
    )
    assert [(r["duplicate"], r["document_id"]) for r in check.json()["results"]] == [
        (True, task["document_id"]),
        (False, None),
    ]


def test_concurrent_identical_uploads_make_one_document(client: TestClient, database_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    content = long_text(80, seed=4242).encode()
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda i: upload(client, [(f"copy{i}.txt", content)]), range(6)))
    tasks = [r.json()["tasks"][0] for r in responses]
    assert sorted(t["status"] for t in tasks) == ["duplicate"] * 5 + ["queued"]
    assert len({t["document_id"] for t in tasks}) == 1
    docs = query(database_url, "SELECT id FROM documents WHERE sha256 = %s", sha256_hex(content))
    assert len(docs) == 1


def test_failed_document_is_requeued_when_uploaded_again(client: TestClient) -> None:
    # The fake embedding backend rejects this text (a non-transient error) the first time only...
    content = b"REJECT400 once"
    first = upload(client, [("reject.txt", content)]).json()
    status = wait_batch(client, first["batch_id"])
    assert status["tasks"][0]["status"] == "failed"
    assert status["tasks"][0]["error"].startswith("The embedding service refused this document")
    # ...uploading the same bytes again queues the failed document again instead of a 'duplicate'.
    second = upload(client, [("reject.txt", content)]).json()
    assert second["tasks"][0]["status"] == "queued"
    assert second["tasks"][0]["document_id"] == first["tasks"][0]["document_id"]
    assert wait_batch(client, second["batch_id"])["tasks"][0]["status"] == "failed"


def test_failed_document_uploaded_again_with_replace_is_queued_again_not_unchanged(
    client: TestClient,
) -> None:
    # With replace=true the same name finds the failed document and the same bytes are no new version:
    # that path would record "unchanged" and leave the document failed for good.
    content = b"REJECT400 once, then replaced by name"
    first = upload(client, [("reject-by-name.txt", content)]).json()
    assert wait_batch(client, first["batch_id"])["tasks"][0]["status"] == "failed"
    second = client.post(
        "/upload", files=[("files", ("reject-by-name.txt", content, "text/plain"))], data={"replace": "true"}
    ).json()
    [task] = second["tasks"]
    assert task["status"] == "queued" and task["document_id"] == first["tasks"][0]["document_id"], task
    assert wait_batch(client, second["batch_id"])["tasks"][0]["status"] == "failed"


def test_failed_document_uploaded_again_under_another_name_takes_that_name(client: TestClient) -> None:
    # Not JSON, so it fails as notes.json; the same bytes sent as notes.txt are read as text.
    content = b'{"unfinished": "export of the lab notes about zebrafish fins'
    first = upload(client, [("notes.json", content)]).json()
    assert wait_batch(client, first["batch_id"])["tasks"][0]["status"] == "failed"
    second = client.post(
        "/upload",
        files=[("files", ("notes.txt", content, "text/plain"))],
        data={"metadata": json.dumps({"lab": "fins"})},
    ).json()
    [task] = second["tasks"]
    assert task["status"] == "queued" and task["document_id"] == first["tasks"][0]["document_id"]
    assert wait_batch(client, second["batch_id"])["tasks"][0]["status"] == "completed"
    document = client.get(f"/documents/{task['document_id']}").json()
    assert (document["filename"], document["file_type"], document["status"]) == ("notes.txt", "txt", "ready")
    assert document["metadata"] == {"lab": "fins"} and document["error"] is None


def test_a_retry_of_a_duplicate_of_a_completed_upload_says_there_is_nothing_to_retry(
    client: TestClient,
) -> None:
    """A duplicate whose upload completed reads "duplicate": its retry was told to "retry that task",
    which is completed and refuses too."""
    content = b"Field notes on the migration of arctic terns, kept once."
    first = upload(client, [("terns.txt", content)]).json()
    [original] = wait_batch(client, first["batch_id"])["tasks"]
    assert original["status"] == "completed", original
    [duplicate] = upload(client, [("terns-copy.txt", content)]).json()["tasks"]
    assert duplicate["status"] == "duplicate", duplicate
    refused = client.post(f"/admin/tasks/{duplicate['task_id']}/retry")
    assert refused.status_code == 409, refused.json()
    detail = refused.json()["detail"]
    assert "nothing to retry" in detail and str(original["task_id"]) in detail, detail


def test_a_duplicate_of_a_document_that_then_fails_is_failed_too(client: TestClient) -> None:
    # The same bytes as notes.pptx (not a presentation) and as notes.txt: the second is a duplicate of
    # the first, which fails. The duplicate said nothing, its batch "completed", and its text was never
    # read under the name that would have worked (QA 4).
    content = b"Plain lab notes about axolotl gills, sent twice under two names."
    first = upload(client, [("notes.pptx", content), ("notes.txt", content)]).json()
    assert [t["status"] for t in first["tasks"]] == ["queued", "duplicate"]
    status = wait_batch(client, first["batch_id"])
    assert status["status"] == "failed" and status["counts"]["failed"] == 2, status
    [original, duplicate] = sorted(status["tasks"], key=lambda t: t["filename"])
    assert duplicate["status"] == "failed" and duplicate["error"].startswith(
        "The same file was uploaded as 'notes.pptx', which failed: The file is not a PowerPoint"
    ), duplicate
    assert duplicate["error"].endswith("Upload this file again to process it as 'notes.txt'."), duplicate
    # The task list shows it as its batch does, and finds it among the failed; a retry of it names the
    # task to retry instead. It was listed as "duplicate" and missing from --status failed.
    listed = client.get("/admin/tasks", params={"batch_id": first["batch_id"], "status": "failed"}).json()
    assert sorted((t["filename"], t["error"]) for t in listed["items"]) == [
        ("notes.pptx", original["error"]),
        ("notes.txt", duplicate["error"]),
    ], listed
    refused = client.post(f"/admin/tasks/{duplicate['task_id']}/retry")
    assert refused.status_code == 409, refused.json()
    assert f"retry task {original['task_id']}" in refused.json()["detail"], refused.json()
    # Uploaded again, it is read as text, in a batch of its own: the first batch, finished, stays as it
    # was (its duplicate follows the task of notes.pptx, not the document).
    again = upload(client, [("notes.txt", content)]).json()
    assert again["tasks"][0]["status"] == "queued"
    assert wait_batch(client, again["batch_id"])["tasks"][0]["status"] == "completed"
    assert wait_batch(client, first["batch_id"]) == status


def test_transient_embedding_failures_are_retried(client: TestClient, database_url: str) -> None:
    response = upload(client, [("flaky.txt", b"FAIL503x2-flaky this text fails twice then works.")])
    status = wait_batch(client, response.json()["batch_id"])
    [task] = status["tasks"]
    assert task["status"] == "completed", task
    assert task["attempts"] == 3 and task["error"] is None
    rows = query(
        database_url, "SELECT count(*) AS n FROM chunks WHERE document_id = %s::uuid", task["document_id"]
    )
    assert rows[0]["n"] == task["total_chunks"] == 1


def test_persistent_transient_failure_gives_up_after_max_attempts(client: TestClient) -> None:
    response = upload(client, [("down.txt", b"ALWAYS503 the backend is down for this one.")])
    status = wait_batch(client, response.json()["batch_id"])
    [task] = status["tasks"]
    assert task["status"] == "failed"
    assert task["attempts"] == 4  # read 3 times (RAG_WORKER_MAX_ATTEMPTS=3), failed on the 4th read
    assert task["error"].startswith("Gave up after 3 attempts: The embedding service is unavailable:")
    assert "HTTP 503" in task["error"]


def test_five_hundred_files_in_one_request(client: TestClient, database_url: str) -> None:
    files = [
        (f"bulk/{i:03d}.txt", f"Bulk file number {i}. It talks about topic {i % 17}.".encode())
        for i in range(500)
    ]
    response = upload(client, files)
    assert response.status_code == 202, response.text
    body = response.json()
    assert len(body["tasks"]) == 500 and body["tasks"][7]["filename"] == "bulk/007.txt"
    status = wait_batch(client, body["batch_id"], timeout=300)
    assert status["counts"]["completed"] == 500 and status["status"] == "completed"
    rows = query(
        database_url,
        "SELECT count(*) AS n, count(DISTINCT document_id) AS docs FROM chunks "
        "WHERE document_id = ANY(%s::uuid[])",
        [t["document_id"] for t in status["tasks"]],
    )
    assert (rows[0]["n"], rows[0]["docs"]) == (500, 500)
    queue = query(database_url, "SELECT count(*) AS n FROM pgmq.q_ingest")
    assert queue[0]["n"] == 0


def test_unknown_batch_is_404(client: TestClient) -> None:
    response = client.get("/tasks/00000000-0000-0000-0000-000000000000/status")
    assert response.status_code == 404

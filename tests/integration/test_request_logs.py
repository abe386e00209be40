"""Request ids and JSON logs across real processes: `rag-server serve` and `rag-server worker` with
RAG_LOG_FORMAT=json. A request's id comes back on its response, is stored on the tasks it queued, and
is on the server's access line and on every worker line about those tasks; no line holds query text,
document text or a key."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.embedding_server import FakeEmbeddingServer, fake_ollama_env
from tests.support.ingest import wait_batch, wait_for
from tests.support.processes import (
    Proc,
    process_env,
    start_listening,
    start_server,
    start_worker,
)

BOOTSTRAP_KEY = "bootstrap-admin-key-for-the-log-tests-0123456789"
DOCUMENT_TEXT = "The quokka-marmalade-7731 protocol keeps every heliotrope ledger balanced at dawn."
QUERY_TEXT = "which zebra-sapphire-4409 ledger stays balanced"
UPLOAD_ID = "upload-req:42/test"
RETRY_ID = "retry-req-0001"


class Stack:
    def __init__(self, server: Proc, worker: Proc) -> None:
        self.server, self.worker = server, worker
        assert server.base_url
        self.client = httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {BOOTSTRAP_KEY}"}, timeout=60
        )

    def entries(self, proc: Proc) -> list[dict[str, Any]]:
        """Every line of the process's log, each parsed as JSON (a line that is not fails here)."""
        lines = proc.log().splitlines()
        parsed = []
        for line in lines:
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError:
                pytest.fail(f"{proc.log_path.name}: not a JSON line: {line!r}")
        return parsed


@pytest.fixture(scope="module")
def stack(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, fake: FakeEmbeddingServer
) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("logs")
    env = process_env(
        database_url,
        logs / "data",
        **fake_ollama_env(fake),  # the embedding service outside the box, faked at the protocol level
        RAG_LOG_FORMAT="json",
        RAG_BOOTSTRAP_ADMIN_KEY=BOOTSTRAP_KEY,
        RAG_WORKER_POLL_INTERVAL_S="0.1",
    )
    server = start_server(env, logs / "server.log")
    worker = start_worker(env, logs / "worker.log")
    stack = Stack(server, worker)
    try:
        yield stack
    finally:
        stack.client.close()
        worker.stop()
        server.stop()


def upload(stack: Stack, name: str, data: bytes, request_id: str) -> httpx.Response:
    files = [("files", (name, data, "application/octet-stream"))]
    return stack.client.post("/upload", files=files, headers={"X-Request-Id": request_id})


def worker_lines_for(stack: Stack, task_id: str) -> list[dict[str, Any]]:
    return [e for e in stack.entries(stack.worker) if e["task_id"] == task_id]


def test_an_upload_carries_its_request_id_to_the_task_and_the_worker_logs(stack: Stack) -> None:
    response = upload(stack, "quokka.txt", DOCUMENT_TEXT.encode(), UPLOAD_ID)
    assert response.status_code == 202, response.text
    assert response.headers["x-request-id"] == UPLOAD_ID
    batch = response.json()
    [task] = batch["tasks"]
    status = wait_batch(stack.client, batch["batch_id"], timeout=180)
    assert status["status"] == "completed", status
    assert status["tasks"][0]["request_id"] == UPLOAD_ID
    listed = stack.client.get("/admin/tasks", params={"batch_id": batch["batch_id"]}).json()
    assert [t["request_id"] for t in listed["items"]] == [UPLOAD_ID]

    # The worker's lines for the task, up to its last one (completed), carry both ids.
    lines = wait_for(
        lambda: (
            (found := worker_lines_for(stack, task["task_id"]))
            and "completed" in found[-1]["message"]
            and found
        ),
        timeout=30,
        what="the worker's completed line",
    )
    assert len(lines) >= 2
    assert all(line["request_id"] == UPLOAD_ID for line in lines), lines

    # The server's access line for the upload: route template, method, status, duration.
    [access] = [
        e
        for e in stack.entries(stack.server)
        if e["request_id"] == UPLOAD_ID and e["logger"] == "rag_server.api.access"
    ]
    assert (access["route"], access["method"], access["status"]) == ("/upload", "POST", 202)
    assert isinstance(access["duration_ms"], float) and access["duration_ms"] >= 0
    assert access["level"] == "INFO" and access["task_id"] is None

    status_id = "status-poll-1"
    stack.client.get(f"/tasks/{batch['batch_id']}/status", headers={"X-Request-Id": status_id})
    [poll] = wait_for(
        lambda: [e for e in stack.entries(stack.server) if e["request_id"] == status_id],
        timeout=10,
        what="the status poll's access line",
    )
    assert poll["route"] == "/tasks/{batch_id}/status"


def test_a_retry_queues_the_task_under_the_retry_requests_id(stack: Stack) -> None:
    response = upload(stack, "broken.pdf", b"%PDF-1.4 this is not really a pdf", "broken-upload")
    batch = response.json()
    [task] = batch["tasks"]
    assert wait_batch(stack.client, batch["batch_id"], timeout=120)["status"] == "failed"

    retried = stack.client.post(f"/admin/tasks/{task['task_id']}/retry", headers={"X-Request-Id": RETRY_ID})
    assert retried.status_code == 200, retried.text
    assert retried.headers["x-request-id"] == RETRY_ID
    assert retried.json()["request_id"] == RETRY_ID
    status = wait_batch(stack.client, batch["batch_id"], timeout=120)
    assert status["status"] == "failed" and status["tasks"][0]["request_id"] == RETRY_ID

    lines = worker_lines_for(stack, task["task_id"])
    assert {line["request_id"] for line in lines} == {"broken-upload", RETRY_ID}
    assert lines[-1]["request_id"] == RETRY_ID and "failed" in lines[-1]["message"]
    # The link: the retry request's line names the request that queued the task before.
    [link] = [
        e
        for e in stack.entries(stack.server)
        if e["request_id"] == RETRY_ID and e["logger"] != "rag_server.api.access"
    ]
    assert task["task_id"] in link["message"] and "broken-upload" in link["message"]


def test_every_response_carries_a_request_id(stack: Stack) -> None:
    client = stack.client
    sent = "client-id-123"
    for method, path in [
        ("GET", "/health"),
        ("GET", "/no/such/route"),  # 404
        ("GET", "/"),  # the web app's shell
        ("GET", "/assets/app.js"),  # its static files
        ("GET", "/v1/models"),
        ("GET", "/documents/not-a-uuid"),  # 422
    ]:
        response = client.request(method, path, headers={"X-Request-Id": sent})
        assert response.headers["x-request-id"] == sent, (path, response.status_code)
        generated = client.request(method, path).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated), path
    unauthenticated = httpx.get(f"{stack.server.base_url}/collections", headers={"X-Request-Id": sent})
    assert unauthenticated.status_code == 401 and unauthenticated.headers["x-request-id"] == sent
    mcp = client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={"X-Request-Id": sent, "Accept": "application/json, text/event-stream"},
    )
    assert mcp.headers["x-request-id"] == sent
    expected = {
        ("GET", None),  # no route matched: 404
        ("GET", "/"),
        ("GET", "/assets/{path}"),
        ("GET", "/v1/models"),
        ("GET", "/documents/{document_id}"),
        ("GET", "/collections"),
        ("POST", "/mcp"),
    }

    def routes() -> set[tuple[str, str | None]]:
        return {
            (e["method"], e["route"])
            for e in stack.entries(stack.server)
            if e["request_id"] == sent and e["logger"] == "rag_server.api.access"
        }

    # The access line is written once the response is complete: a moment after the client has it.
    wait_for(lambda: expected <= routes(), timeout=10, what=f"access lines {expected - routes()}")
    with client.stream(
        "POST", "/query/stream", json={"query": "heliotrope"}, headers={"X-Request-Id": sent}
    ) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["x-request-id"] == sent
        stream.read()


@pytest.mark.parametrize(
    "bad",
    [b"x" * 129, b"tab\there", b"with space", b"caf\xe9", b""],
    ids=["long", "tab", "space", "latin1", "empty"],
)
def test_an_unusable_request_id_is_replaced_not_refused(stack: Stack, bad: bytes) -> None:
    response = stack.client.get("/health", headers={"X-Request-Id": bad})
    assert response.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_no_log_line_holds_query_text_document_text_or_a_key(stack: Stack) -> None:
    created = stack.client.post("/keys", json={"name": "log-test-reader", "role": "reader"})
    assert created.status_code == 201, created.text
    reader_key = created.json()["key"]
    search_id = "search-req-1"
    found = stack.client.post(
        "/search",
        json={"query": QUERY_TEXT, "top_k": 3},
        headers={"Authorization": f"Bearer {reader_key}", "X-Request-Id": search_id},
    )
    assert found.status_code == 200, found.text
    # In a query string (uvicorn's access log would print it) and in a 404's message.
    assert stack.client.get("/documents", params={"collection": "zebra-sapphire-4409"}).status_code == 404
    stack.client.post("/query", json={"query": QUERY_TEXT})
    bad_key = httpx.get(
        f"{stack.server.base_url}/collections",
        headers={"Authorization": "Bearer rag_not-a-real-key-but-secret-looking"},
    )
    assert bad_key.status_code == 401

    # A service that quotes what it could not embed: the client and the task's error get its answer,
    # the log lines do not.
    echoed = stack.client.post("/search", json={"query": f"ECHO400 {QUERY_TEXT}"})
    assert echoed.status_code == 503 and "zebra-sapphire-4409" in echoed.json()["detail"]
    echo_upload = upload(stack, "echo.txt", f"ECHO400 {DOCUMENT_TEXT}".encode(), "echo-upload")
    status = wait_batch(stack.client, echo_upload.json()["batch_id"])
    assert status["status"] == "failed" and "quokka-marmalade-7731" in status["tasks"][0]["error"]
    assert any("refused" in e["message"] for e in worker_lines_for(stack, status["tasks"][0]["task_id"]))

    [access] = wait_for(
        lambda: [e for e in stack.entries(stack.server) if e["request_id"] == search_id],
        timeout=10,
        what="the search's access line",
    )
    assert access["route"] == "/search" and access["status"] == 200
    secrets = [BOOTSTRAP_KEY, reader_key, "rag_not-a-real-key-but-secret-looking"]
    texts = [QUERY_TEXT, "zebra-sapphire-4409", DOCUMENT_TEXT, "quokka-marmalade-7731", "heliotrope"]
    for proc in (stack.server, stack.worker):
        entries = stack.entries(proc)  # every line is JSON
        assert entries
        for entry in entries:
            line = json.dumps(entry)
            for needle in secrets + texts:
                assert needle not in line, (proc.log_path.name, needle, entry)


def test_every_line_of_both_logs_is_json_after_a_clean_stop(stack: Stack) -> None:
    assert stack.worker.stop() == 0
    assert stack.server.stop() == 0
    for proc in (stack.server, stack.worker):
        entries = stack.entries(proc)
        assert all(set(e) >= {"time", "level", "logger", "message", "request_id", "task_id"} for e in entries)
    assert any(e["message"] == "worker stopped" for e in stack.entries(stack.worker))


def test_up_passes_the_json_format_to_its_worker(
    database_url: str, tmp_path: Path, fake: FakeEmbeddingServer
) -> None:
    """`rag-server up` and the worker it supervises write one log (its stdout/stderr), all JSON."""
    env = process_env(
        database_url,
        tmp_path / "data",
        **fake_ollama_env(fake),
        RAG_LOG_FORMAT="json",
        RAG_BOOTSTRAP_ADMIN_KEY=BOOTSTRAP_KEY,
        RAG_WORKER_POLL_INTERVAL_S="0.1",
    )
    up = start_listening(["up"], env, tmp_path / "up.log")
    try:
        stack = Stack(up, up)
        response = upload(stack, "up.txt", b"A file uploaded through the supervised stack.", "via-up-1")
        assert wait_batch(stack.client, response.json()["batch_id"], timeout=120)["status"] == "completed"
        [task] = response.json()["tasks"]
        lines = wait_for(
            lambda: (
                (found := worker_lines_for(stack, task["task_id"]))
                and "completed" in found[-1]["message"]
                and found
            ),
            timeout=30,
            what="the supervised worker's completed line",
        )
        assert {line["request_id"] for line in lines} == {"via-up-1"}
        assert {line["logger"] for line in lines} == {"rag_server.ingestion.worker"}
        stack.client.close()
    finally:
        assert up.stop() == 0
    entries = Stack.entries(stack, up)  # every line JSON, the worker's included
    messages = [e["message"] for e in entries]
    assert any(m.startswith("rag-server on http://") for m in messages)
    assert any(m.startswith("worker ready") for m in messages)
    assert "worker stopped" in messages

"""Uploads racing each other: real concurrent HTTP requests to the in-process app (asyncio.gather over
its pool's connections), the end state read from the database. No worker runs: a document's first task
stays queued, which is what the requests race against."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from rag_server.api import upload_budget
from rag_server.api.upload_budget import UploadBudget
from rag_server.config import Settings
from rag_server.ingestion.documents import sha256_hex
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_embedding_settings
from tests.support.ingest import query
from tests.support.sample_files import long_text


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    return fake_embedding_settings(database_url, data_dir, fake)


async def upload(client: httpx.AsyncClient, files: list[tuple[str, bytes]], **form: str) -> httpx.Response:
    parts = [("files", (name, data, "text/plain")) for name, data in files]
    return await client.post("/upload", files=parts, data=form)


@pytest.mark.parametrize("copies", [2, 5])
async def test_concurrent_replacing_uploads_of_a_new_name_make_one_document(
    app_client: httpx.AsyncClient, database_url: str, copies: int
) -> None:
    for round_ in range(5):
        name = f"race-{copies}-{round_}.txt"
        versions = [f"{name} v{i}: {long_text(40, seed=i)}".encode() for i in range(copies)]
        replies = await asyncio.gather(
            *(upload(app_client, [(name, data)], replace="true") for data in versions)
        )
        docs = query(database_url, "SELECT id FROM documents WHERE filename = %s", name)
        assert len(docs) == 1, [(r.status_code, r.text) for r in replies]
        # The first creates it; the others find it, still queued: the clear 409, never a 5xx.
        assert sorted(r.status_code for r in replies) == [202] + [409] * (copies - 1), [
            r.text for r in replies
        ]
        for r in replies:
            if r.status_code == 409:
                assert "still being processed" in r.json()["detail"], r.text
        again = await upload(app_client, [(name, b"one more version")], replace="true")
        assert again.status_code == 409 and "still being processed" in again.json()["detail"], again.text


async def test_uploads_of_the_same_new_files_in_opposite_orders_both_succeed(
    app_client: httpx.AsyncClient, database_url: str
) -> None:
    for round_ in range(5):
        a, b = ((f"order-{x}-{round_}.txt", f"{x} {round_}: {long_text(40)}".encode()) for x in "ab")
        first, second = await asyncio.gather(upload(app_client, [a, b]), upload(app_client, [b, a]))
        assert (first.status_code, second.status_code) == (202, 202), (first.text, second.text)
        # Each reply lists its tasks in its request's order, whatever order they were stored in.
        assert [t["filename"] for t in first.json()["tasks"]] == [a[0], b[0]]
        assert [t["filename"] for t in second.json()["tasks"]] == [b[0], a[0]]
        statuses = sorted(t["status"] for r in (first, second) for t in r.json()["tasks"])
        assert statuses == ["duplicate", "duplicate", "queued", "queued"]
        for _, data in (a, b):
            docs = query(database_url, "SELECT id FROM documents WHERE sha256 = %s", sha256_hex(data))
            assert len(docs) == 1


async def test_uploads_past_the_memory_budget_wait_their_turn_else_a_503(
    app: FastAPI, app_client: httpx.AsyncClient, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every upload's files were read into the API's memory at once (N editors: N x 512 MB). Past
    RAG_UPLOAD_MEMORY_BYTES an upload waits for earlier ones to be stored, else answers a 503 to retry."""
    budget: UploadBudget = app.state.upload_budget
    async with budget.holding(budget.limit):  # as if other uploads held all of it
        monkeypatch.setattr(upload_budget, "WAIT_S", 0.5)
        refused = await upload(app_client, [("budget-busy.txt", b"The lighthouse keeper's log.")])
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "5" and "other uploads" in refused.json()["detail"]
        monkeypatch.setattr(upload_budget, "WAIT_S", 60.0)
        waiting = asyncio.create_task(upload(app_client, [("budget-later.txt", b"The beacon's oil.")]))
        await asyncio.sleep(0.3)
        assert not waiting.done()
    later = await waiting  # taken once the budget is free
    assert later.status_code == 202, later.text
    stored = query(database_url, "SELECT filename FROM documents WHERE filename LIKE %s", "budget-%")
    assert [row["filename"] for row in stored] == ["budget-later.txt"]
    assert budget.held == 0

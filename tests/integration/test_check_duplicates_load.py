"""POST /documents/check-duplicates on a real socket: cleaning its names (up to 10,000, paths of up to 1,000
characters) runs beside the event loop, not on it. One reader's request of 10,000 deep paths held the
loop for 14 s: /health/live, and every other request of the server, waited for it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest

from rag_server.access import keys
from rag_server.access.models import CreateKey
from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from rag_server.ingestion import documents
from rag_server.ingestion.parsing import sanitize_filename


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=data_dir)


@pytest.fixture(scope="module")
async def reader_key(runtime: Runtime) -> str:
    return (await keys.create_key(runtime.pool, CreateKey(name="reader", role="reader"))).key


async def test_other_requests_are_answered_while_its_names_are_cleaned(
    reader_key: str, live_app_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cleaning, health_answered = threading.Event(), threading.Event()
    answered_meanwhile: list[bool] = []

    def watched_sanitize(raw: str | None, *, folders: bool = True) -> str:
        if not answered_meanwhile:  # the first name: hold until /health/live answers (on the loop, never)
            cleaning.set()
            answered_meanwhile.append(health_answered.wait(15))
        return sanitize_filename(raw, folders=folders)

    monkeypatch.setattr(documents, "sanitize_filename", watched_sanitize)
    files = [{"filename": "d/" * 300 + f"x{i}.md", "sha256": f"{i:064x}"} for i in range(100)]
    async with httpx.AsyncClient(base_url=live_app_url, timeout=60) as client:
        check = asyncio.create_task(
            client.post(
                "/documents/check-duplicates",
                json={"files": files},
                headers={"Authorization": f"Bearer {reader_key}"},
            )
        )
        assert await asyncio.to_thread(cleaning.wait, 15)
        assert (await client.get("/health/live")).status_code == 200
        health_answered.set()
        reply = await check
    assert reply.status_code == 200, reply.text
    assert answered_meanwhile == [True]
    assert [r["filename"] for r in reply.json()["results"]] == [f["filename"] for f in files]

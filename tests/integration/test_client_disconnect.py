"""A read-only request whose client leaves stops, its PostgreSQL statement too; a write does not.

Real HTTP (the app served by uvicorn on a socket in this process) and a statement made to wait: the test
holds an ACCESS EXCLUSIVE lock on `documents`, so a listing's statement waits in PostgreSQL until the
client gives up. pg_stat_activity then shows whether its backend still waits. Before
api/disconnect.py it waited on until the lock was released (or RAG_API_DB_TIMEOUT_S, 60 s, passed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct

WAITING = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'
  AND query ILIKE $1
"""


@pytest.fixture(scope="module")
async def document_id(runtime: Runtime) -> str:
    [found] = await ingest_documents_direct(
        runtime,
        [DirectDocument(filename="otters.txt", content=b"The otters came back at dusk.", metadata={})],
    )
    return str(found)


@pytest.fixture
async def locked(database_url: str, document_id: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection holding ACCESS EXCLUSIVE on `documents` (released at the end: rolled back)."""
    conn = await asyncpg.connect(database_url)
    transaction = conn.transaction()
    await transaction.start()
    await conn.execute("LOCK TABLE documents IN ACCESS EXCLUSIVE MODE")
    try:
        yield conn
    finally:
        if not conn.is_closed():
            await transaction.rollback()
            await conn.close()


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 10) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


async def waiting(conn: asyncpg.Connection, pattern: str) -> int:
    await conn.execute("SELECT pg_stat_clear_snapshot()")  # else a transaction sees its first snapshot
    return int(await conn.fetchval(WAITING, pattern))


async def leave(
    request: Callable[[httpx.AsyncClient], Awaitable[Any]], seen: Callable[[], Awaitable[bool]]
) -> None:
    """Send a request and, once its statement is seen waiting, close its connection unanswered."""
    client = httpx.AsyncClient(timeout=60)
    sent = asyncio.ensure_future(request(client))
    try:
        assert await eventually(seen), "the request's statement never waited on the lock"
    finally:
        sent.cancel()
        await asyncio.gather(sent, return_exceptions=True)
        await client.aclose()  # the socket closes: uvicorn reports http.disconnect


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/documents?sort=name", None),
        ("GET", '/documents?text={"$contains": "otters"}', None),  # the web app's "Contains"
        ("POST", "/documents/check-duplicates", {"files": [{"filename": "a.txt", "sha256": "0" * 64}]}),
    ],
    ids=["listing", "text-filtered", "read-only-post"],
)
async def test_a_read_whose_client_left_stops_its_statement(
    live_app_url: str, locked: asyncpg.Connection, method: str, path: str, body: dict[str, Any] | None
) -> None:
    pattern = "%documents%"
    closed_before, failed_before = await requests_counted(live_app_url, method)
    await leave(
        lambda c: c.request(method, live_app_url + path, json=body),
        lambda: _some(waiting(locked, pattern)),
    )
    # Cancelled in PostgreSQL while the lock is still held: nothing waits any more.
    assert await eventually(lambda: _none(waiting(locked, pattern))), "the statement went on waiting"
    await locked.execute("ROLLBACK")
    await locked.close()
    async with httpx.AsyncClient(timeout=60) as client:  # the pool's connections still work
        assert (await client.get(live_app_url + "/documents")).status_code == 200
    # Counted as "client closed request", not as a 500.
    assert await requests_counted(live_app_url, method) == (closed_before + 1, failed_before)


async def requests_counted(url: str, method: str) -> tuple[float, float]:
    """The server's requests of this method that ended as 499 and as 500, from its /metrics."""
    async with httpx.AsyncClient(timeout=60) as client:
        metrics = (await client.get(url + "/metrics")).text
    counts = {"499": 0.0, "500": 0.0}
    for line in metrics.splitlines():
        if line.startswith("rag_http_requests_total{") and f'method="{method}"' in line:
            for status in counts:
                if f'status="{status}"' in line:
                    counts[status] += float(line.rsplit(" ", 1)[1])
    return counts["499"], counts["500"]


async def test_a_write_whose_client_left_still_completes(
    live_app_url: str, locked: asyncpg.Connection, document_id: str
) -> None:
    pattern = "%FROM documents%FOR UPDATE%"
    await leave(
        lambda c: c.patch(f"{live_app_url}/documents/{document_id}", json={"metadata": {"kept": "yes"}}),
        lambda: _some(waiting(locked, pattern)),
    )
    await asyncio.sleep(1)
    assert await waiting(locked, pattern) == 1  # not cancelled: still waiting for the lock
    await locked.execute("ROLLBACK")
    await locked.close()
    async with httpx.AsyncClient(timeout=60) as client:

        async def written() -> bool:
            doc = (await client.get(f"{live_app_url}/documents/{document_id}")).json()
            return bool(doc["metadata"] == {"kept": "yes"})

        assert await eventually(written)


async def _some(count: Awaitable[int]) -> bool:
    return await count > 0


async def _none(count: Awaitable[int]) -> bool:
    return await count == 0

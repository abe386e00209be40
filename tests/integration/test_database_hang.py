"""A database that hangs (a frozen host, a network dropping packets) under a running API server: a request
is a 503 after RAG_API_DB_TIMEOUT_S instead of a request that never ends, and the server answers again
once the database does. A deletion (a collection, a document, the queue's archive), whose time grows with
what it deletes, is not bound by it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from contextlib import AbstractAsyncContextManager

import httpx
import openai
import pytest
from fastapi import FastAPI
from mcp import Client, MCPError

from rag_server.config import Settings
from tests.integration.conftest import APP_BASE_URL
from tests.integration.test_mcp import error_text, mcp_http, stdio_params
from tests.support.hangs import PATIENCE_S, locked, table_locked, while_frozen
from tests.support.sse import read_events

BOUND_S = 2.0


@pytest.fixture(scope="module")
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"api_db_timeout_s": BOUND_S})


SAID = "the database did not answer in time, retry shortly"
TOOL_SAID = f"Error executing tool list_documents: {SAID}"


async def answers_again(app_client: httpx.AsyncClient) -> None:
    """The server answers once the database does: the connections given up on are replaced."""
    for _ in range(50):
        r = await app_client.get("/documents")
        if r.status_code == 200:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the server did not answer again: {r.status_code} {r.text}")


async def test_a_request_to_a_database_that_hangs_is_a_503_then_the_server_answers_again(
    app_client: httpx.AsyncClient, pg_server: str, database_url: str
) -> None:
    assert (await app_client.get("/documents")).status_code == 200  # the pool holds connections
    ended, request = await while_frozen(pg_server, database_url, app_client.get("/documents"))
    r = request.result()
    assert ended, f"the request ended only once the database answered: {r.status_code} {r.text}"
    assert r.status_code == 503, r.text
    assert r.json() == {"detail": SAID} and r.headers["retry-after"] == "5"
    await answers_again(app_client)


async def test_requests_beyond_the_pool_to_a_database_frozen_whole_each_end_with_a_503(
    app_client: httpx.AsyncClient, pg_server: str, database_url: str
) -> None:
    """The whole server frozen (its main process too): more requests than the pool has connections.
    Each waits for a connection, or to make one, within the bound too: a connection being made waited
    for asyncpg's own 60 s, and those waiting for a free one waited in turn (QA measured 60-120 s)."""
    assert (await app_client.get("/documents")).status_code == 200
    many = asyncio.gather(*(app_client.get("/documents") for _ in range(14)))  # RAG_DB_POOL_MAX is 10
    ended, requests = await while_frozen(pg_server, database_url, many, whole=True)
    assert ended, "the requests ended only once the database answered"
    assert [(r.status_code, r.json()) for r in requests.result()] == [(503, {"detail": SAID})] * 14
    await answers_again(app_client)


async def test_a_streamed_answer_says_the_database_did_not_answer_in_time(
    app_client: httpx.AsyncClient, app: FastAPI, database_url: str
) -> None:
    """Its headers are gone when the search waits: the stream's error said "the answer failed:
    TimeoutError: " (and so did /v1's), where the 503 says why."""
    async with table_locked(database_url, "chunks"):  # what the search reads
        async with app_client.stream("POST", "/query/stream", json={"query": "What do kayaks need?"}) as r:
            assert r.status_code == 200
            events = [e async for e in read_events(r.aiter_lines())]
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with openai.AsyncOpenAI(
            base_url=f"{APP_BASE_URL}/v1",
            api_key="unused",
            max_retries=0,
            http_client=httpx.AsyncClient(transport=transport, timeout=PATIENCE_S),
        ) as client:
            stream = await client.chat.completions.create(
                model="rag:default",
                messages=[{"role": "user", "content": "What do kayaks need?"}],
                stream=True,
            )
            with pytest.raises(openai.APIError, match=f"^{SAID}$"):
                async for _ in stream:
                    pass
    assert events[-1] == ("error", {"detail": SAID}), events


async def test_mcp_over_http_says_when_the_database_does_not_answer_in_time(
    live_app_url: str, pg_server: str, database_url: str
) -> None:
    """Through the MCP SDK's client, the API's sentence: the SDK said "Server returned an error response"
    when the key's check hung, and "Error executing tool" with a timeout's empty text when the tool's
    query did."""
    async with mcp_http(live_app_url) as client:
        assert not (await client.call_tool("list_documents", {})).is_error
        # The tool's own query waits (a lock on the table) while the key's check answers: a tool error.
        async with table_locked(database_url, "documents"):
            result = await asyncio.wait_for(client.call_tool("list_documents", {}), PATIENCE_S)
        assert result.is_error and error_text(result) == TOOL_SAID
        # The whole database hangs, the key's check with it: the request's JSON-RPC error.
        ended, call = await while_frozen(pg_server, database_url, client.call_tool("list_documents", {}))
        assert ended, "the call answered only once the database did"
        with pytest.raises(MCPError, match=f"^{SAID}$"):
            call.result()
        again = await client.call_tool("list_documents", {})
        assert not again.is_error, error_text(again)


async def test_mcp_over_stdio_is_bound_like_the_api(settings: Settings, database_url: str) -> None:
    """`rag-server mcp` serves an assistant, which waits on each tool call like on a request: a tool
    call that waits for the database past RAG_API_DB_TIMEOUT_S is a tool error that says so."""
    async with Client(stdio_params(settings), read_timeout_seconds=120) as client:
        assert not (await client.call_tool("list_documents", {})).is_error
        async with table_locked(database_url, "documents"):
            result = await asyncio.wait_for(client.call_tool("list_documents", {}), PATIENCE_S)
    assert result.is_error and error_text(result) == TOOL_SAID


async def outlasting_the_bound(
    held: AbstractAsyncContextManager[None], request: Awaitable[httpx.Response]
) -> httpx.Response:
    """`request`, sent while `held` (a lock) keeps it waiting: it still waits after twice the bound,
    and answers once the lock is released."""
    async with held:
        waiting = asyncio.ensure_future(request)
        await asyncio.sleep(2 * BOUND_S)
        assert not waiting.done(), waiting.result().text  # it waits for the lock
    return await waiting


@pytest.mark.parametrize("what", ["collection", "document"])
async def test_a_deletion_may_take_longer_than_the_bound(
    app_client: httpx.AsyncClient, database_url: str, what: str
) -> None:
    """Its statements' time grows with what it deletes: a large collection, or one waiting for a worker's
    write, is no database that hangs. Here it waits for a row lock for twice the bound, then deletes."""
    name = f"slow-{what}"
    created = await app_client.post("/collections", json={"name": name})
    assert created.status_code == 201, created.text
    files = {"files": (f"{name}.txt", f"A document of {name}, about lock waits.".encode(), "text/plain")}
    uploaded = await app_client.post("/upload", files=files, data={"collection": name})
    assert uploaded.status_code == 202, uploaded.text
    document_id = uploaded.json()["tasks"][0]["document_id"]
    r = await outlasting_the_bound(
        locked(database_url, "SELECT 1 FROM documents WHERE id = $1 FOR UPDATE", document_id),
        app_client.delete(f"/collections/{name}", params={"force": "true"})
        if what == "collection"
        else app_client.delete(f"/documents/{document_id}"),
    )
    assert r.status_code == 204, r.text
    assert (await app_client.get(f"/documents/{document_id}")).status_code == 404


async def test_the_queue_archive_purge_may_take_longer_than_the_bound(
    app_client: httpx.AsyncClient, app: FastAPI, database_url: str
) -> None:
    """Like a deletion, its time grows with what it deletes (every archived message at once): it waits
    for a lock on the archive's rows for twice the bound, then purges them."""
    files = {"files": ("archived.txt", b"A cancelled upload, its message archived.", "text/plain")}
    uploaded = await app_client.post("/upload", files=files)  # no worker runs here: it stays queued
    assert uploaded.status_code == 202, uploaded.text
    task_id = uploaded.json()["tasks"][0]["task_id"]
    cancelled = await app_client.post(f"/admin/tasks/{task_id}/cancel")  # its message is archived
    assert cancelled.status_code == 200, cancelled.text
    archived = (await app_client.get("/admin/queue/archive", params={"limit": 500})).json()
    assert task_id in {m["task_id"] for m in archived["items"]}
    table = app.state.runtime.queue.archive_table
    r = await outlasting_the_bound(
        locked(database_url, f"SELECT 1 FROM {table} FOR UPDATE"), app_client.delete("/admin/queue/archive")
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"deleted": archived["total"]}
    assert (await app_client.get("/admin/queue/archive")).json()["total"] == 0

"""A database that hangs (a frozen host, a network dropping packets) under a running API server: a request
is a 503 after RAG_API_DB_TIMEOUT_S instead of a request that never ends, and the server answers again
once the database does. A deletion, whose time grows with what it deletes, is not bound by it."""

from __future__ import annotations

import asyncio
import os
import signal
from urllib.parse import urlsplit

import asyncpg
import httpx
import psycopg
import pytest
from mcp import Client, MCPError

from rag_server.config import Settings
from tests.integration.test_mcp import error_text, mcp_http, stdio_params

BOUND_S = 2.0


@pytest.fixture(scope="module")
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"api_db_timeout_s": BOUND_S})


def backends(pg_server: str, database_url: str) -> list[int]:
    """The server processes of every connection to the test's database (the app's pool)."""
    database = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(pg_server, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (database,)
        ).fetchall()
    return [row[0] for row in rows]


async def test_a_request_to_a_database_that_hangs_is_a_503_then_the_server_answers_again(
    app_client: httpx.AsyncClient, pg_server: str, database_url: str
) -> None:
    assert (await app_client.get("/documents")).status_code == 200  # the pool holds connections
    frozen = backends(pg_server, database_url)
    assert frozen
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    request = asyncio.create_task(app_client.get("/documents"))
    try:
        # Far beyond the bound: what is checked is that the request ends while the database hangs.
        answered, _ = await asyncio.wait({request}, timeout=30)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    r = await request
    assert answered, f"the request ended only once the database answered: {r.status_code} {r.text}"
    assert r.status_code == 503, r.text
    assert r.json() == {"detail": "the database did not answer in time, retry shortly"}
    for _ in range(50):  # the connections given up on are replaced
        r = await app_client.get("/documents")
        if r.status_code == 200:
            break
        await asyncio.sleep(0.2)
    assert r.status_code == 200, r.text


async def test_mcp_over_http_says_when_the_database_does_not_answer_in_time(
    live_app_url: str, pg_server: str, database_url: str
) -> None:
    """Through the MCP SDK's client, the API's sentence: the SDK said "Server returned an error response"
    when the key's check hung, and "Error executing tool" with a timeout's empty text when the tool's
    query did."""
    async with mcp_http(live_app_url) as client:
        assert not (await client.call_tool("list_documents", {})).is_error
        # The tool's own query waits (a lock on the table) while the key's check answers: a tool error.
        owner = await asyncpg.connect(database_url)
        try:
            async with owner.transaction():
                await owner.execute("LOCK TABLE documents IN ACCESS EXCLUSIVE MODE")
                result = await asyncio.wait_for(client.call_tool("list_documents", {}), 30)
        finally:
            await owner.close()
        said = "Error executing tool list_documents: the database did not answer in time, retry shortly"
        assert result.is_error and error_text(result) == said
        # The whole database hangs, the key's check with it: the request's JSON-RPC error.
        frozen = backends(pg_server, database_url)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        call = asyncio.create_task(client.call_tool("list_documents", {}))
        try:
            answered, _ = await asyncio.wait({call}, timeout=30)
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
        assert answered, "the call answered only once the database did"
        with pytest.raises(MCPError, match=r"^the database did not answer in time, retry shortly$"):
            await call
        again = await client.call_tool("list_documents", {})
        assert not again.is_error, error_text(again)


async def test_mcp_over_stdio_is_bound_like_the_api(settings: Settings, database_url: str) -> None:
    """`rag-server mcp` serves an assistant, which waits on each tool call like on a request: a tool
    call that waits for the database past RAG_API_DB_TIMEOUT_S is a tool error that says so."""
    async with Client(stdio_params(settings), read_timeout_seconds=120) as client:
        assert not (await client.call_tool("list_documents", {})).is_error
        owner = await asyncpg.connect(database_url)
        try:
            async with owner.transaction():
                await owner.execute("LOCK TABLE documents IN ACCESS EXCLUSIVE MODE")
                result = await asyncio.wait_for(client.call_tool("list_documents", {}), 30)
        finally:
            await owner.close()
    said = "Error executing tool list_documents: the database did not answer in time, retry shortly"
    assert result.is_error and error_text(result) == said


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
    owner = await asyncpg.connect(database_url)
    try:
        holding = owner.transaction()
        await holding.start()
        await owner.execute("SELECT 1 FROM documents WHERE id = $1 FOR UPDATE", document_id)
        deleting = asyncio.create_task(
            app_client.delete(f"/collections/{name}", params={"force": "true"})
            if what == "collection"
            else app_client.delete(f"/documents/{document_id}")
        )
        await asyncio.sleep(2 * BOUND_S)
        assert not deleting.done(), deleting.result().text  # it waits for the lock
        await holding.rollback()
        r = await deleting
    finally:
        await owner.close()
    assert r.status_code == 204, r.text
    assert (await app_client.get(f"/documents/{document_id}")).status_code == 404

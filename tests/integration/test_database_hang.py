"""A database that hangs (a frozen host, a network dropping packets) under a running API server: a request
is a 503 after RAG_API_DB_TIMEOUT_S instead of a request that never ends, and the server answers again
once the database does. A deletion, whose time grows with what it deletes, is not bound by it."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest
from mcp import Client, MCPError

from rag_server.config import Settings
from tests.integration.test_mcp import error_text, mcp_http, stdio_params
from tests.support.hangs import PATIENCE_S, table_locked, while_frozen

BOUND_S = 2.0


@pytest.fixture(scope="module")
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"api_db_timeout_s": BOUND_S})


SAID = "the database did not answer in time, retry shortly"
TOOL_SAID = f"Error executing tool list_documents: {SAID}"


async def test_a_request_to_a_database_that_hangs_is_a_503_then_the_server_answers_again(
    app_client: httpx.AsyncClient, pg_server: str, database_url: str
) -> None:
    assert (await app_client.get("/documents")).status_code == 200  # the pool holds connections
    ended, request = await while_frozen(pg_server, database_url, app_client.get("/documents"))
    r = request.result()
    assert ended, f"the request ended only once the database answered: {r.status_code} {r.text}"
    assert r.status_code == 503, r.text
    assert r.json() == {"detail": SAID}
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

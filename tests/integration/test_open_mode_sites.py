"""The open API (no key exists, loopback: decision 0010) on a real socket answers this machine's clients
and its own web app, but no web page of another site: a cross-site form POST (its Origin names the site)
stored files, and a page whose name was pointed at 127.0.0.1 (DNS rebinding: its Host names the site)
read every document and made itself an admin key. /mcp had the MCP SDK's check; the rest had none."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from rag_server.access import keys
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct

SITE = "attacker.example"


@pytest.fixture(scope="module")
async def document(runtime: Runtime) -> str:
    (doc_id,) = await ingest_documents_direct(
        runtime, [DirectDocument("notes.txt", b"Private notes: the heron count is 41.", {})]
    )
    return str(doc_id)


@pytest.fixture
async def client(document: str, live_app_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_app_url, timeout=60) as c:
        yield c


def port_of(client: httpx.AsyncClient) -> int:
    port = client.base_url.port
    assert port is not None
    return port


async def test_a_page_of_another_site_named_as_this_machine_reads_nothing(
    client: httpx.AsyncClient, runtime: Runtime, document: str
) -> None:
    """DNS rebinding: the browser sends the page's own name as Host (and, for a POST, its Origin)."""
    rebound = {"Host": f"{SITE}:{port_of(client)}"}
    for reply in (
        await client.get("/documents", headers=rebound),
        await client.get(f"/documents/{document}/download", headers=rebound),
        await client.post("/search", json={"query": "heron count"}, headers=rebound),
        await client.get("/v1/models", headers=rebound),
        await client.post(
            "/keys",
            json={"name": "theirs", "role": "admin"},
            headers={**rebound, "Origin": f"http://{SITE}:{port_of(client)}"},
        ),
    ):
        assert reply.status_code == 403, (reply.request.url, reply.text)
        body = reply.json()
        said = body["error"]["message"] if "error" in body else body["detail"]  # /v1: OpenAI's shape
        assert "no API key exists" in said
    assert not await keys.keys_exist(runtime.pool)


@pytest.mark.parametrize("origin", [f"https://{SITE}", "null", "http://127.0.0.1.attacker.example"])
async def test_a_cross_site_form_post_stores_nothing(
    client: httpx.AsyncClient, runtime: Runtime, origin: str
) -> None:
    reply = await client.post(
        "/upload", files={"files": ("planted.txt", b"Planted text.")}, headers={"Origin": origin}
    )
    assert reply.status_code == 403, reply.text
    assert await runtime.pool.fetchval("SELECT count(*) FROM documents WHERE filename = 'planted.txt'") == 0


async def test_this_machine_and_its_own_web_app_are_answered(client: httpx.AsyncClient) -> None:
    port = port_of(client)
    for headers in (
        {},  # curl, the CLI, an SDK: no Origin
        {"Origin": f"http://127.0.0.1:{port}"},  # the web app's own POSTs
        {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"},
        {"Host": f"[::1]:{port}"},
    ):
        reply = await client.post("/search", json={"query": "heron count"}, headers=headers)
        assert reply.status_code == 200, (headers, reply.text)
        assert reply.json()["results"], headers

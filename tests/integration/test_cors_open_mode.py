"""RAG_CORS_ORIGINS on an open server (no key exists, loopback): listing a site lets its pages read the
answers to requests that carry a key, never the open API itself (api/cors.py: "With no key at all ... the
API still answers no page of another site, whatever is listed"). /mcp, which the MCP SDK's own origin check
guards, let a listed page in without a key: every tool, as the open principal (an admin)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from rag_server.access import keys
from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from tests.support.live_app import serve_in_thread
from tests.support.mcp_wire import INITIALIZE, MCP_HEADERS

LISTED = "http://chat.test:3000"


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=data_dir, cors_origins=LISTED)


@pytest.fixture(scope="module")
async def client(runtime: Runtime, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    assert not await keys.keys_exist(runtime.pool)  # open mode
    from rag_server.api.app import create_app

    with serve_in_thread(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            yield http


async def test_a_listed_sites_page_gets_no_open_rest_api(client: httpx.AsyncClient) -> None:
    reply = await client.get("/v1/models", headers={"Origin": LISTED})
    assert reply.status_code == 403, reply.text


async def test_a_listed_sites_page_gets_no_open_mcp(client: httpx.AsyncClient) -> None:
    reply = await client.post("/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Origin": LISTED})
    assert reply.status_code in (401, 403), reply.text
    assert "result" not in reply.text


async def test_this_machines_clients_still_speak_mcp(client: httpx.AsyncClient) -> None:
    reply = await client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    assert reply.status_code == 200, reply.text
    assert reply.json()["result"]["serverInfo"]["name"]

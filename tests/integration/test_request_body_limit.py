"""RAG_MAX_REQUEST_BYTES (api/body_limit.py) on a real socket: a body over it is a 413 before it is read,
with or without a key and with or without a Content-Length; FastAPI parsed any body before its 401, so
anyone reaching the port could make the server hold and parse hundreds of MB. Uploads keep their own
limits."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from rag_server.access import keys
from rag_server.access.models import CreateKey
from rag_server.config import Settings
from rag_server.infra.runtime import Runtime

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=data_dir, max_request_bytes=LIMIT)


@pytest.fixture(scope="module")
async def editor_key(runtime: Runtime) -> str:
    return (await keys.create_key(runtime.pool, CreateKey(name="editor", role="editor"))).key


@pytest.fixture
async def client(editor_key: str, live_app_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The key is made first: the server is not open (no key), so a key is needed."""
    async with httpx.AsyncClient(base_url=live_app_url, timeout=60) as c:
        yield c


def over_the_limit() -> bytes:
    """A JSON body a little over LIMIT: a list where an integer is expected."""
    return json.dumps({"query": "x", "top_k": [1] * (LIMIT // 3)}).encode()


async def in_pieces(body: bytes) -> AsyncIterator[bytes]:
    """The body without a Content-Length (chunked transfer encoding)."""
    for start in range(0, len(body), 8192):
        yield body[start : start + 8192]


@pytest.mark.parametrize("path", ["/search", "/v1/embeddings", "/mcp", "/documents/metadata"])
async def test_a_body_over_the_limit_is_413_before_authentication(
    client: httpx.AsyncClient, editor_key: str, path: str
) -> None:
    headers = {"Content-Type": "application/json"}
    reply = await client.post(path, content=over_the_limit(), headers=headers)
    assert reply.status_code == 413, reply.text
    # In the shape each API's clients read: OpenAI's error on /v1, a JSON-RPC error on /mcp.
    said = {
        "/v1/embeddings": lambda r: r["error"]["message"],
        "/mcp": lambda r: r["error"]["message"],
    }.get(path, lambda r: r["detail"])(reply.json())
    assert "RAG_MAX_REQUEST_BYTES" in said, reply.text
    # With a key, and sent in pieces without a Content-Length: the same.
    headers["Authorization"] = f"Bearer {editor_key}"
    reply = await client.post(path, content=in_pieces(over_the_limit()), headers=headers)
    assert reply.status_code == 413, reply.text


async def test_a_body_within_the_limit_is_answered(client: httpx.AsyncClient, editor_key: str) -> None:
    body = {"query": "x" * 20_000}
    headers = {"Authorization": f"Bearer {editor_key}", "Content-Type": "application/json"}
    assert (await client.post("/search", json=body, headers=headers)).status_code == 200
    reply = await client.post("/search", content=in_pieces(json.dumps(body).encode()), headers=headers)
    assert reply.status_code == 200, reply.text
    assert (await client.post("/search", json=body)).status_code == 401


async def test_an_upload_keeps_its_own_limits(client: httpx.AsyncClient, editor_key: str) -> None:
    text = b"Herons wait in shallow water. " * (2 * LIMIT // 30)
    reply = await client.post(
        "/upload", files={"files": ("herons.txt", text)}, headers={"Authorization": f"Bearer {editor_key}"}
    )
    assert reply.status_code == 202, reply.text


async def test_every_route_taking_files_and_no_other_gets_the_upload_bound(client: httpx.AsyncClient) -> None:
    """Read from the app's own OpenAPI: the body limit had its own copy of the upload routes' paths, so a
    renamed or new one was refused at RAG_MAX_REQUEST_BYTES."""
    paths = (await client.get("/openapi.json")).json()["paths"]
    operations = [
        (method.upper(), path, "multipart/form-data" in operation.get("requestBody", {}).get("content", {}))
        for path, item in paths.items()
        for method, operation in item.items()
    ]
    uploads = {f"{method} {path}" for method, path, takes_files in operations if takes_files}
    assert {"POST /upload", "PUT /documents/{document_id}/file"} <= uploads
    body = b"x" * (LIMIT + 1)
    for method, path, takes_files in operations:
        url = re.sub(r"\{[^}/]+\}", str(uuid4()), path)
        reply = await client.request(method, url, content=body)
        if takes_files:
            # Past the body limit: the route asks for a key before it reads a byte.
            assert reply.status_code == 401, (method, path, reply.text)
            # And with a trailing slash: the router's redirect, not a 413.
            assert (await client.request(method, f"{url}/", content=body)).status_code == 307, (method, path)
        else:
            assert reply.status_code == 413, (method, path, reply.text)
            assert "RAG_MAX_REQUEST_BYTES" in reply.text, (method, path, reply.text)


async def test_the_openai_package_reads_why(live_app_url: str, editor_key: str) -> None:
    from openai import APIStatusError, AsyncOpenAI

    async with AsyncOpenAI(base_url=f"{live_app_url}/v1", api_key=editor_key, max_retries=0) as openai:
        with pytest.raises(APIStatusError) as refused:
            await openai.embeddings.create(model="rag:default", input=["heron " * (LIMIT // 5)])
    assert refused.value.status_code == 413
    assert "RAG_MAX_REQUEST_BYTES" in refused.value.message, refused.value.message

"""HEAD wherever GET works (api/head.py): the same status and headers as the GET, no body — on every
GET operation of the API, over the in-process app and on a real socket (uvicorn)."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from fastapi import FastAPI

from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct

# Differ between any two requests; Content-Length too where the body is live figures (metrics, status).
PER_REQUEST = {"date", "x-request-id", "x-rag-read-after"}


@pytest.fixture(scope="module")
async def document_id(runtime: Runtime, app: FastAPI) -> str:
    (doc_id,) = await ingest_documents_direct(
        runtime, [DirectDocument("heron.txt", b"The grey heron waits in shallow water.", {})]
    )
    return str(doc_id)


def headers_of(reply: httpx.Response, *, length: bool = True) -> dict[str, str]:
    skip = PER_REQUEST if length else PER_REQUEST | {"content-length"}
    return {k: v for k, v in reply.headers.items() if k not in skip}


async def test_head_is_get_without_the_body_on_every_get_operation(
    app: FastAPI, app_client: httpx.AsyncClient, document_id: str
) -> None:
    paths = [p for p, item in app.openapi()["paths"].items() if "get" in item]
    assert "/health" in paths and "/documents/{document_id}/download" in paths
    paths += ["/search", "/mcp"]  # POST only: HEAD is a 405 with the same Allow as GET's
    for template in paths:
        # Path parameters: the document (its routes), else an id or name that names nothing (a 404/422).
        path = template.replace("{document_id}", document_id)
        path = re.sub(r"\{[a-z_]+\}", str(uuid.uuid4()), path)
        get = await app_client.get(path)
        head = await app_client.head(path)
        assert head.status_code == get.status_code, (path, head.status_code, get.status_code)
        assert head.content == b"", path
        live = path in ("/metrics", "/status")  # figures that change between the two requests
        assert headers_of(head, length=not live) == headers_of(get, length=not live), path


async def test_a_head_is_counted_and_logged_under_its_route(
    app_client: httpx.AsyncClient, document_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Its GET route's template, not `unmatched`: uptime checkers send HEAD all day long."""
    with caplog.at_level("INFO", logger="rag_server.api.access"):
        assert (await app_client.head(f"/documents/{document_id}")).status_code == 200
    assert any("/documents/{document_id}" in r.getMessage() for r in caplog.records), caplog.text
    metrics = (await app_client.get("/metrics")).text
    counted = 'rag_http_requests_total{method="HEAD",route="/documents/{document_id}",status="200"}'
    assert counted in metrics, [line for line in metrics.splitlines() if 'method="HEAD"' in line]


async def test_head_of_a_download_has_the_files_headers(
    app_client: httpx.AsyncClient, document_id: str
) -> None:
    head = await app_client.head(f"/documents/{document_id}/download")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(b"The grey heron waits in shallow water."))
    assert head.headers["content-disposition"].startswith('attachment; filename="heron.txt"')


async def test_head_on_a_socket(live_app_url: str) -> None:
    async with httpx.AsyncClient(base_url=live_app_url, timeout=30) as http:
        get, head = await http.get("/health"), await http.head("/health")
    assert head.status_code == get.status_code == 200
    assert head.content == b"" and headers_of(head) == headers_of(get)

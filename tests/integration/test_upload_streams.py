"""An upload's body as it streams in, on a real socket: a client gone mid-upload is no server error, and a
body sent without a Content-Length (chunked) is refused once it passes RAG_MAX_UPLOAD_REQUEST_BYTES, not
read to its end first (1.5 GB were spooled to disk before the 413, so an editor key could fill it)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from rag_server.access import keys
from rag_server.access.models import CreateKey
from rag_server.config import Settings
from rag_server.infra.runtime import Runtime

MB = 1024 * 1024
BOUNDARY = "b0undary"


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path) -> Settings:
    return Settings(
        database_url=database_url, data_dir=data_dir, max_upload_bytes=MB, max_upload_request_bytes=2 * MB
    )


@pytest.fixture(scope="module")
async def editor_key(runtime: Runtime) -> str:
    return (await keys.create_key(runtime.pool, CreateKey(name="editor", role="editor"))).key


@pytest.fixture
async def url(editor_key: str, live_app_url: str) -> str:
    return live_app_url


def part_head(name: str) -> bytes:
    disposition = f'form-data; name="files"; filename="{name}"'
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\nContent-Type: text/plain\r\n\r\n".encode()


async def test_a_client_gone_mid_upload_is_no_server_error(
    url: str, editor_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    address = urlsplit(url)
    assert address.hostname is not None and address.port is not None
    request = (
        f"POST /upload HTTP/1.1\r\nHost: {address.netloc}\r\nAuthorization: Bearer {editor_key}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    body = part_head("gone.txt") + b"words " * 1000
    with caplog.at_level(logging.INFO, logger="rag_server"):
        with socket.create_connection((address.hostname, address.port)) as sock:
            sock.sendall(request + f"{len(body):x}\r\n".encode() + body + b"\r\n")
            await asyncio.sleep(0.5)  # the server reads the first chunk, then waits for the next: none comes
        for _ in range(200):  # the access line, once the server has noticed
            if any(r.name == "rag_server.api.access" for r in caplog.records):
                break
            await asyncio.sleep(0.05)
    access = [r.getMessage() for r in caplog.records if r.name == "rag_server.api.access"]
    assert access and access[0].startswith("POST /upload 400"), access
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_chunked_upload_over_the_request_limit_is_refused_as_it_streams(
    url: str, editor_key: str
) -> None:
    total = 64 * MB
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield part_head("huge.txt")
        block = b"a" * (256 * 1024)
        while sent < total:
            sent += len(block)
            yield block
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    headers = {
        "Authorization": f"Bearer {editor_key}",
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
    }
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        reply = await client.post("/upload", content=body(), headers=headers)
    assert reply.status_code == 413, reply.text
    # Refused as it passed the request's bound: read to its end, the file's own limit said "huge.txt is
    # 64.0 MB, over the limit of 1.0 MB" (the rest is received and dropped, no longer stored).
    assert (
        reply.json()["detail"]
        == "The upload is over the limit of 2.0 MB per request; send the files in several uploads."
    )

"""A request's line and headers are bounded (api/request_head.py) on a real `rag-server serve`: over 64 KiB
is a 431 with a JSON detail, the connection closed, before any key is checked. uvicorn's httptools kept a
head of any size: 300 MB of headers with no key took the server from 0.3 to 0.6 GB, and a 150 MB URL
held its event loop for seconds. A body is no part of the head, whatever arrives with it."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator

import httpx
import pytest

from rag_server.api.request_head import MAX_HEAD_BYTES
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_ollama_env
from tests.support.processes import Proc, process_env, start_server

KEY = "bootstrap-admin-key-for-the-head-tests-0123456789"


@pytest.fixture(scope="module")
def server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, fake: FakeEmbeddingServer
) -> Iterator[Proc]:
    logs = tmp_path_factory.mktemp("head")
    env = process_env(database_url, logs / "data", **fake_ollama_env(fake), RAG_BOOTSTRAP_ADMIN_KEY=KEY)
    proc = start_server(env, logs / "server.log")
    try:
        yield proc
    finally:
        proc.stop()


def exchange(server: Proc, *requests: bytes) -> bytes:
    """Send the requests at once on one connection (each whole in one write) and read until the server
    closes it."""
    assert server.base_url
    port = int(server.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            for request in requests:
                sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused while still sending: its answer is read below
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def head(path: str, *headers: bytes, close: bool = False) -> bytes:
    lines = [b"GET %s HTTP/1.1" % path.encode(), b"Host: 127.0.0.1", *headers]
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def refused(answer: bytes) -> None:
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large", answer[:300]
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in headers.lower()
    assert "over the limit of 65,536 bytes" in json.loads(body)["detail"]


@pytest.mark.parametrize(
    "request_head",
    [
        head("/health", b"X-Big: " + b"x" * 2**20),  # one header of 1 MB
        head("/health", *(b"X-Many-%d: %s" % (i, b"y" * 1000) for i in range(200))),  # 200 KB of them
        head("/documents?name=" + "a" * 2**20),  # a URL of 1 MB
    ],
    ids=["one-header", "many-headers", "url"],
)
def test_a_head_over_the_bound_is_431_before_authentication(server: Proc, request_head: bytes) -> None:
    refused(exchange(server, request_head))
    # The server goes on: the next request is answered.
    assert httpx.get(f"{server.base_url}/health", timeout=30).status_code == 200


def test_heads_within_the_bound_are_answered_with_their_bodies_and_on_one_connection(server: Proc) -> None:
    near = b"X-Near: " + b"z" * (MAX_HEAD_BYTES - 1000)
    # Two requests of ~63 KiB heads on one connection (the count starts again for each), then one with a
    # 1 MB body sent in the same write as its head: the body is not counted as head.
    body = json.dumps({"query": "x", "padding": "p" * 2**20}).encode()
    post = (
        b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % (KEY.encode(), len(body))
    ) + body
    answer = exchange(server, head("/health", near), head("/health", near), post)
    statuses = re.findall(rb"HTTP/1\.1 \d{3} [^\r]*", answer)  # a body is not followed by a line break
    # /search refuses the unknown field `padding` (422): the body was read and judged, not the head.
    assert statuses == [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK", b"HTTP/1.1 422 Unprocessable Entity"], answer[
        -500:
    ]

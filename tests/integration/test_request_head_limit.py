"""A request's line and headers are bounded (api/request_head.py) on a real `rag-server serve`: over 64 KiB
is a 431 with a JSON detail, the connection closed, before any key is checked. uvicorn's httptools kept a
head of any size: 300 MB of headers with no key took the server from 0.3 to 0.6 GB, and a 150 MB URL
held its event loop for seconds. A body is no part of the head, whatever arrives with it. A head must
also arrive in time (408): uvicorn waited for ever on a connection that sent nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from rag_server.api import request_head
from rag_server.api.request_head import MAX_HEAD_BYTES, BoundedHttpToolsProtocol
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_ollama_env
from tests.support.processes import Proc, free_port, process_env, start_server

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


async def slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers after SLOW_ANSWER_S: longer than the head's time, which it must not be cut by."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await asyncio.sleep(SLOW_ANSWER_S)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


SLOW_ANSWER_S = 3.0


@pytest.fixture
def short_head_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The protocol on an in-process server, the head's time and a body's pause 1 s instead of
    HEAD_TIMEOUT_S and BODY_IDLE_S; its port."""
    monkeypatch.setattr(request_head, "HEAD_TIMEOUT_S", 1.0)
    monkeypatch.setattr(request_head, "BODY_IDLE_S", 1.0)
    monkeypatch.setattr(request_head, "BODY_MIN_BYTES", 1)
    port = free_port()
    config = uvicorn.Config(
        slow_app, host="127.0.0.1", port=port, http=BoundedHttpToolsProtocol, log_level="error"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive()
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


def read_to_close(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_a_head_that_does_not_arrive_in_time_is_408_and_closed(short_head_time: int) -> None:
    """uvicorn held such a connection for ever: idle sockets held every connection the server could
    accept (its open files)."""
    with socket.create_connection(("127.0.0.1", short_head_time), timeout=20) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer = read_to_close(sock)  # a timeout here: the server kept it open
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout", answer
    assert "did not arrive within 1 s" in json.loads(rest.partition(b"\r\n\r\n")[2])["detail"]


def test_a_connection_that_sends_nothing_is_closed(short_head_time: int) -> None:
    with socket.create_connection(("127.0.0.1", short_head_time), timeout=20) as sock:
        assert read_to_close(sock) == b""  # closed, with nothing to answer (a timeout: kept open)


def test_an_answer_longer_than_the_heads_time_is_not_cut(short_head_time: int) -> None:
    with socket.create_connection(("127.0.0.1", short_head_time), timeout=20) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = read_to_close(sock)
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"ok"), answer


def test_a_body_that_stops_arriving_is_408_and_closed(short_head_time: int) -> None:
    """A head announcing 100 bytes, then 3 of them: uvicorn held the connection for ever."""
    with socket.create_connection(("127.0.0.1", short_head_time), timeout=20) as sock:
        sock.sendall(b'POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{"q')
        answer = read_to_close(sock)  # a timeout here: the server kept it open
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout", answer
    assert "of it came in 1 s" in json.loads(rest.partition(b"\r\n\r\n")[2])["detail"]


def test_a_slow_body_that_keeps_arriving_is_answered(short_head_time: int) -> None:
    with socket.create_connection(("127.0.0.1", short_head_time), timeout=20) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 6\r\nConnection: close\r\n\r\n")
        for piece in (b"ab", b"cd", b"ef"):  # 1.5 s in all, never 1 s without a piece
            time.sleep(0.5)
            sock.sendall(piece)
        answer = read_to_close(sock)
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"ok"), answer


def test_a_body_trickled_too_slowly_is_408_and_closed(
    short_head_time: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte every 59 s kept BODY_IDLE_S from ever passing: the connection held for as long as the
    client liked. Under BODY_MIN_BYTES in a window, the body is over."""
    monkeypatch.setattr(request_head, "BODY_MIN_BYTES", 100)
    with socket.create_connection(("127.0.0.1", short_head_time), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n")
        stop = threading.Event()

        def trickle() -> None:  # 2 bytes each 0.3 s, until the server closes: never 1 s without one
            with contextlib.suppress(OSError):
                while not stop.wait(0.3):
                    sock.sendall(b"ab")

        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        try:
            answer = read_to_close(sock)  # a timeout here: the server kept it open
        finally:
            stop.set()
            sender.join()
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout", answer
    assert "under 100 bytes of it came in 1 s" in json.loads(rest.partition(b"\r\n\r\n")[2])["detail"]


def test_a_head_over_the_bound_after_a_request_still_answered_is_refused_after_its_answer(
    short_head_time: int,
) -> None:
    """The 431 was written at once, while the request before it (pipelined) was still answered: the
    client read it as that request's answer, and the real one was lost (review)."""
    with socket.create_connection(("127.0.0.1", short_head_time), timeout=20) as sock:
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(0.3)  # read and under way (SLOW_ANSWER_S)
        sock.sendall(head("/second", b"X-Big: " + b"x" * (MAX_HEAD_BYTES + 1000)))
        answer = read_to_close(sock)
    first, _, rest = answer.partition(b"\r\n\r\nok")
    assert first.startswith(b"HTTP/1.1 200 OK"), answer[:300]
    refused(rest)


def test_a_websocket_upgrade_is_an_ordinary_request(server: Proc) -> None:
    """The API serves no websocket: an upgrade is answered as the plain request it also is, on the HTTP
    protocol whose clocks bound it (a switched connection would have left them behind)."""
    upgrade = head(
        "/health",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        b"Sec-WebSocket-Version: 13",
    )
    answer = exchange(server, upgrade)  # "Connection: Upgrade" is not keep-alive: closed after it
    statuses = re.findall(rb"HTTP/1\.1 \d{3} [^\r]*", answer)
    assert statuses == [b"HTTP/1.1 200 OK"], answer[:500]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["status"] == "ok"


@pytest.mark.parametrize(
    "request_line",
    [
        "GET /documents?q=caf\u00e9 HTTP/1.1".encode(),  # a raw non-ASCII byte, not percent-encoded
        b"GET /health HTTP/1.1\r\nBad Header Without Colon",
    ],
)
def test_a_request_that_is_not_http_is_a_json_400(server: Proc, request_line: bytes) -> None:
    answer = exchange(server, request_line + b"\r\nHost: 127.0.0.1\r\n\r\n")
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 400 Bad Request", answer[:300]
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in headers.lower()
    assert json.loads(body)["detail"].startswith(
        "The request is not valid HTTP/1.1 (Invalid HTTP request received)"
    )


def test_a_request_that_is_not_http_after_one_still_answered_is_refused_after_its_answer(
    short_head_time: int,
) -> None:
    """uvicorn wrote its 400 at once, in place of the answer to the request before it (pipelined): the
    client took it for that request's answer, though that request ran (review)."""
    with socket.create_connection(("127.0.0.1", short_head_time), timeout=20) as sock:
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(0.3)  # read and under way (SLOW_ANSWER_S)
        sock.sendall("GET /café HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        answer = read_to_close(sock)
    first, _, rest = answer.partition(b"\r\n\r\nok")
    assert first.startswith(b"HTTP/1.1 200 OK"), answer[:300]
    assert rest.startswith(b"HTTP/1.1 400 Bad Request"), answer[:300]
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["detail"].startswith(
        "The request is not valid HTTP/1.1"
    )

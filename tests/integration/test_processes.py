"""The helpers that start `rag-server serve` for the tests and the benchmarks: a port handed out by
`free_port` can be taken by another process before the server binds it. Parallel tests once got the same
port, and a browser test signed in to another test's server; the helper must end on a server of its own."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rag_server.evaluation import processes
from rag_server.infra.runtime import Runtime
from tests.support.processes import free_port, listens_on, process_env, start_server


class HealthyEverywhere(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def squatter() -> Iterator[int]:
    """Another server on a port, answering /health with 200: the port our server was handed."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), HealthyEverywhere)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_a_server_handed_a_taken_port_starts_again_on_a_port_of_its_own(
    runtime: Runtime, tmp_path: Path, squatter: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    handed_out = iter([squatter, free_port()])
    monkeypatch.setattr(processes, "free_port", lambda: next(handed_out))
    server = start_server(process_env(runtime.database_url, tmp_path), tmp_path / "server.log")
    try:
        port = int(str(server.base_url).rsplit(":", 1)[1])
        assert port != squatter
        assert listens_on(server.popen.pid, port)
        assert not listens_on(server.popen.pid, squatter)
    finally:
        server.stop()


def test_listens_on_tells_a_process_listening_from_one_that_is_not(squatter: int) -> None:
    assert listens_on(os.getpid(), squatter)  # the squatter thread runs in this process
    assert not listens_on(os.getpid(), free_port())

"""Fixtures shared by several integration modules (module-scoped ones are still one per module), and
the `integration` marker on every test under this directory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from rag_server.api.app import create_app
from rag_server.config import Settings
from tests.fakes.embedding_server import FakeEmbeddingServer
from tests.support.live_app import serve_in_thread
from tests.support.processes import Proc

# A loopback address: the open API (no key) answers only requests addressed to one (access/exposure.py).
APP_BASE_URL = "http://127.0.0.1"
HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is an integration test; marked in this one place so no module can forget it
    (tests/unit/test_markers.py checks that `-m "not integration"` selects nothing here)."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeEmbeddingServer]:
    """A local server speaking Ollama's embedding protocol (768-d), one per module."""
    server = FakeEmbeddingServer(dim=768).start()
    yield server
    server.stop()


@pytest.fixture
def workers() -> Iterator[list[Proc]]:
    """Worker processes a test starts; any still running are killed at the end of the test."""
    procs: list[Proc] = []
    yield procs
    for proc in procs:
        proc.kill()


@pytest.fixture(scope="module")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The real application in this process, its lifespan running (runtime, pool, embedder, chat)."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="module")
async def app_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP to the in-process app, no socket. An unhandled exception comes back as the 500 a real client
    would see (`raise_app_exceptions=False`), not as an exception in the test."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=APP_BASE_URL, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def sync_app_client(settings: Settings) -> Iterator[TestClient]:
    """The real application in this process behind a synchronous httpx client (Starlette's TestClient:
    the lifespan and every request run on the client's own event loop in a thread). For sync tests that
    poll a worker subprocess: their `time.sleep` and psycopg reads never block the app."""
    application = create_app(settings)
    with TestClient(application, base_url=APP_BASE_URL, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def live_app_url(settings: Settings) -> Iterator[str]:
    """The URL of the real application served over a socket from this process (for CLI subprocesses)."""
    with serve_in_thread(create_app(settings)) as url:
        yield url

"""Fixtures shared by several integration modules (module-scoped ones are still one per module)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.ingest_fake_embeddings import FakeEmbeddingServer
from tests.processes import Proc


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

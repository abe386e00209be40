"""Shared fixtures: one real embedded PostgreSQL per test session, a fresh database per module.

Nothing here mocks our own infrastructure: tests talk to a real server over real sockets.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from rag_server.config import Settings
from rag_server.infra import admin
from rag_server.infra.runtime import Runtime, open_runtime
from tests.chaos.cluster import CrashableCluster
from tests.fakes.llm_server import FakeLLM

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest_plugins = ["tests.support.watchdog"]
# Helpers that assert on behalf of tests report their failures like the tests themselves.
pytest.register_assert_rewrite("tests.support.ingest")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of the test PostgreSQL: $DATABASE_URL when set, else a throwaway embedded server."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    # Short path: the server's unix socket lives in this directory (sun_path is 108 bytes).
    root = Path(tempfile.mkdtemp(prefix="ragt-", dir="/tmp"))
    cluster = CrashableCluster.create(root / "pg")
    try:
        yield cluster.uri
    finally:
        # Deleted next: no shutdown checkpoint needed (it would write the dirty buffers for nothing).
        cluster.crash()
        shutil.rmtree(root, ignore_errors=True)  # a cluster per test session: ~50 MB each


async def create_database(server_url: str, prefix: str = "t") -> str:
    """A new empty database on the test server; returns its URL."""
    return await admin.create_database(server_url, f"{prefix}_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
async def database_url(pg_server: str) -> str:
    """A fresh, empty database for this test module (isolation between modules)."""
    return await create_database(pg_server)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=data_dir)


@pytest.fixture(scope="module")
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """Migrated database + pool + queue for this module."""
    async with open_runtime(settings, migrate=True) as rt:
        yield rt


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeLLM]:
    """A local server speaking OpenAI's chat completions API (tests/fakes/llm_server.py), one per module."""
    fake = FakeLLM().start()
    yield fake
    fake.stop()

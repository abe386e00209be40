"""`rag-server migrate` on a new, empty database refuses a RAG_EMBEDDING_DIM the local model does not
make, in one line and before anything is created: migration 0001 fixes the dimension of the database,
and a database made at the wrong one could not be used once the setting was right."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import asyncpg

from tests.conftest import create_database


async def test_a_dimension_the_model_does_not_make_creates_nothing(pg_server: str, tmp_path: Path) -> None:
    url = await create_database(pg_server, "dim")
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "rag_server", "migrate"],
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": url, "RAG_EMBEDDING_DIM": "768"},
        cwd=tmp_path,  # no developer .env
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "error: RAG_EMBEDDING_DIM=768, but sentence-transformers/all-MiniLM-L6-v2 makes 384-d vectors:"
        " set RAG_EMBEDDING_DIM=384"
    )
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
    finally:
        await conn.close()

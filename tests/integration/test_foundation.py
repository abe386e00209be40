"""The data layer: migrations, pgmq install, capability report, embedding guard, embedded server."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg
import httpx
import pytest

from rag_server.config import Settings
from rag_server.infra.admin import get_meta
from rag_server.infra.capabilities import SchemaMismatchError, capability_report
from rag_server.infra.migrations import current_revision, upgrade_to_head
from rag_server.infra.runtime import Runtime, open_runtime
from tests.conftest import create_database
from tests.support.processes import process_env, start_server

EXPECTED_TABLES = {
    "app_meta",
    "documents",
    "document_files",
    "chunks",
    "job_batches",
    "job_tasks",
    "chat_sessions",
    "chat_messages",
}


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rag_server", *args], env=env, capture_output=True, text=True, timeout=120
    )


async def test_migrations_create_schema_hnsw_and_queue(runtime: Runtime) -> None:
    async with runtime.pool.acquire() as conn:
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
        assert tables >= EXPECTED_TABLES
        indexdef = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'chunks_embedding_hnsw_idx'"
        )
        assert "hnsw" in indexdef and "vector_cosine_ops" in indexdef
        assert "m='16'" in indexdef and "ef_construction='64'" in indexdef
        dim = await conn.fetchval(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'chunks'::regclass AND attname = 'embedding'"
        )
        assert dim == 384
        queues = [r["queue_name"] for r in await conn.fetch("SELECT queue_name FROM pgmq.list_queues()")]
        assert queues == ["ingest"]
        fk = await conn.fetchval(
            "SELECT confdeltype::text FROM pg_constraint"
            " WHERE conrelid = 'chunks'::regclass AND contype = 'f'"
        )
        assert fk == "c"  # ON DELETE CASCADE


async def test_rerunning_migrations_is_a_no_op(runtime: Runtime) -> None:
    before = await asyncio.to_thread(current_revision, runtime.database_url, runtime.settings)
    await asyncio.to_thread(upgrade_to_head, runtime.database_url, runtime.settings)
    after = await asyncio.to_thread(current_revision, runtime.database_url, runtime.settings)
    assert before == after is not None
    async with runtime.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM pgmq.meta") == 1
        assert await get_meta(conn, "embedding_model") == runtime.settings.embedding_model


async def test_capability_report_lists_extensions_and_engine(runtime: Runtime) -> None:
    report = await capability_report(runtime.pool)
    assert report["postgres"].startswith("18")
    assert report["extensions"]["vector"] == {"active": True, "version": "0.8.5"}
    pgmq = report["extensions"]["pgmq"]
    # The embedded server has no pgmq extension package: installed from the bundled SQL.
    assert pgmq["active"] is True and pgmq["install"].startswith("sql ")
    assert report["extensions"]["pg_search"]["active"] is False
    assert report["bm25_engine"] == "native"
    assert report["embedding"] == {"model": "sentence-transformers/all-MiniLM-L6-v2", "dim": 384}


async def test_pgmq_sql_is_not_run_again_on_a_database_that_has_it(pg_server: str, tmp_path: Path) -> None:
    url = await create_database(pg_server)
    conn = await asyncpg.connect(url)
    try:
        # Simulate a database where pgmq was installed by someone else beforehand.
        from pgmq.install import get_embedded_install_sql

        await conn.execute(get_embedded_install_sql())
        settings = Settings(database_url=url, data_dir=tmp_path)
        await asyncio.to_thread(upgrade_to_head, url, settings)
        install = await get_meta(conn, "pgmq_install")
        assert install == "sql (pre-existing)"
        assert await conn.fetchval("SELECT count(*) FROM pgmq.meta WHERE queue_name = 'ingest'") == 1
    finally:
        await conn.close()


async def test_concurrent_migrate_from_two_processes(pg_server: str, tmp_path: Path) -> None:
    url = await create_database(pg_server)
    env = process_env(url, tmp_path)

    async def migrate() -> tuple[int | None, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rag_server",
            "migrate",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        return proc.returncode, out.decode()

    results = await asyncio.gather(migrate(), migrate())
    assert [code for code, _ in results] == [0, 0], results
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM alembic_version") == 1
        assert await conn.fetchval("SELECT count(*) FROM pgmq.meta") == 1
        assert await get_meta(conn, "embedding_dim") == 384
    finally:
        await conn.close()


async def test_other_embedding_dimension_is_a_clear_startup_error(runtime: Runtime) -> None:
    wrong = runtime.settings.model_copy(update={"embedding_dim": 768, "embedding_model": "nomic-embed-text"})
    with pytest.raises(SchemaMismatchError) as err:
        async with open_runtime(wrong):
            pass
    message = str(err.value)
    assert "all-MiniLM-L6-v2 (384-d)" in message and "nomic-embed-text (768-d)" in message


async def test_cli_reports_dimension_mismatch_without_traceback(runtime: Runtime, tmp_path: Path) -> None:
    env = process_env(runtime.database_url, tmp_path, RAG_EMBEDDING_DIM="768")
    result = await asyncio.to_thread(run_cli, "doctor", env=env)
    assert result.returncode == 2
    assert "error: this database stores embeddings from" in result.stderr
    assert "Traceback" not in result.stderr


def test_processes_share_one_embedded_server_sized_for_the_machine() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="ragd-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["RAG_DATA_DIR"] = str(data_dir)
    probe = (
        "from rag_server.config import get_settings;"
        "from rag_server.infra.embedded_postgres import ensure_embedded_postgres as e;"
        "p = e(get_settings().embedded_pgdata); print(p.pid, p.started_here)"
    )
    try:
        # Started together: exactly one of them starts the server, the other attaches to it.
        probes = [
            subprocess.Popen([sys.executable, "-c", probe], env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=60)[0].split() for p in probes]
        assert sorted(started for _, started in outputs) == ["False", "True"]
        assert outputs[0][0] == outputs[1][0]  # one postmaster pid
        # The fresh cluster was restarted once with memory settings for this machine.
        import psycopg

        from rag_server.infra.embedded_postgres import ensure_embedded_postgres, server_settings

        def assert_sized_for_the_machine() -> None:
            with psycopg.connect(ensure_embedded_postgres(data_dir / "pg").uri) as conn:
                for name, value in server_settings().items():
                    row = conn.execute(
                        "SELECT pg_size_bytes(current_setting(%s)) = pg_size_bytes(%s)", (name, value)
                    ).fetchone()
                    assert row == (True,), name

        assert_sized_for_the_machine()
        # A process started later attaches to the same server.
        later = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
        )
        assert later.stdout.split() == [outputs[0][0], "False"]
        # A cluster from before these settings (PostgreSQL defaults) gets them at its next start.
        with psycopg.connect(ensure_embedded_postgres(data_dir / "pg").uri, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET ALL")
        ensure_embedded_postgres(data_dir / "pg").stop()
        restarted = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
        )
        assert restarted.stdout.split()[1] == "True"
        assert_sized_for_the_machine()
    finally:
        from rag_server.infra.embedded_postgres import ensure_embedded_postgres

        ensure_embedded_postgres(data_dir / "pg").stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_health_over_http_reports_capabilities(runtime: Runtime, tmp_path: Path) -> None:
    server = start_server(process_env(runtime.database_url, tmp_path), tmp_path / "server.log")
    try:
        response = httpx.get(f"{server.base_url}/health", timeout=10)
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "ok"
        assert body["extensions"]["vector"]["active"] is True
        assert body["extensions"]["pgmq"]["active"] is True
        assert body["bm25_engine"] in {"native", "pg_search"}
        assert body["embedding"] == {"model": "sentence-transformers/all-MiniLM-L6-v2", "dim": 384}
        assert body["queue"] == "ingest"
        assert body["postgres"].split(".")[0].isdigit()
    finally:
        # uvicorn re-raises SIGTERM after a graceful shutdown, so -15 is a clean exit too.
        assert server.stop() in (0, -15)
        assert "Application shutdown complete" in server.log()

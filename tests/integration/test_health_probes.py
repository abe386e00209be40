"""/health/live and /health/ready through the real app on a real database: ready on a healthy stack;
503 naming the failing check when the database refuses connections or its schema is not this code's
(behind: migrate; ahead: a newer version migrated it); live (and /metrics, with rag_database_up 0)
while the database is down."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from rag_server.config import Settings
from rag_server.infra.migrations import head_revisions
from tests.support.hangs import while_frozen
from tests.support.processes import free_port, settings_env

CHECKS = {"database", "migrations", "embedding", "queue"}


@pytest.fixture(scope="module")
def settings(settings: Settings) -> Settings:
    # A key check needs the database: only a public /metrics can answer during an outage.
    return settings.model_copy(update={"metrics_public": True})


async def ready_when(client: httpx.AsyncClient, status: int, attempts: int = 150) -> httpx.Response:
    """The readiness answer once it is `status` (a pool reconnects after an outage on next use)."""
    for _ in range(attempts):
        r = await client.get("/health/ready")
        if r.status_code == status:
            return r
        await asyncio.sleep(0.2)
    raise AssertionError(f"/health/ready never answered {status}: {r.status_code} {r.text}")


@contextmanager
def database_refusing_connections(pg_server: str, database_url: str) -> Iterator[None]:
    """The outage of test_worker_db_outage.py: no new connections, the open ones cut."""
    database = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')


async def test_a_healthy_stack_is_live_and_ready(app_client: httpx.AsyncClient) -> None:
    assert (await app_client.get("/health/live")).json() == {"status": "live"}
    r = await app_client.get("/health/ready")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready" and body["failing"] == [] and body["detail"] is None
    assert set(body["checks"]) == CHECKS and all(c["ok"] for c in body["checks"].values())
    assert sorted(head_revisions())[0] in body["checks"]["migrations"]["detail"]


@pytest.mark.parametrize(
    ("found", "said"),
    [
        ("0007_task_failures_and_workers", "run `rag-server migrate`"),
        # Migrated by a newer rag-server: `migrate` cannot help (it said to run it).
        ("0099_from_a_newer_version", "which this rag-server does not have: a newer version migrated it"),
    ],
)
async def test_a_schema_other_than_the_codes_is_not_ready_and_says_what_to_do(
    app_client: httpx.AsyncClient, settings: Settings, database_url: str, found: str, said: str
) -> None:
    """The alembic_version row of this throwaway database says another revision than the head."""
    [head] = head_revisions()
    with psycopg.connect(database_url, autocommit=True) as owner:
        owner.execute("UPDATE alembic_version SET version_num = %s", (found,))
        try:
            r = await app_client.get("/health/ready")
            # Behind: `migrate` would change this module's database. Ahead: it and `serve` must refuse.
            commands = (
                [["migrate"], ["serve", "--port", str(free_port())]] if found.startswith("0099") else []
            )
            refused = [
                await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, "-m", "rag_server", *command],
                    env=settings_env(settings),
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                for command in commands
            ]
            at = owner.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            owner.execute("UPDATE alembic_version SET version_num = %s", (head,))
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["status"] == "not_ready" and body["failing"] == ["migrations"]
    assert found in body["detail"] and said in body["detail"], body["detail"]
    assert body["checks"]["database"]["ok"] and body["checks"]["queue"]["ok"]
    if found.startswith("0099"):
        # Refused in one line, the database left as it was (Alembic's was a traceback; `serve` on
        # loopback showed it out of uvicorn's start-up).
        assert "rag-server migrate" not in body["detail"]
        assert at == (found,)
        for done in refused:
            assert done.returncode == 2, done.stderr
            assert done.stderr.startswith(f"error: the database is at revision {found}, which"), done.stderr
            assert "Traceback" not in done.stderr
    await ready_when(app_client, 200)


async def test_a_database_outage_is_not_ready_but_live(
    app_client: httpx.AsyncClient, pg_server: str, database_url: str
) -> None:
    await ready_when(app_client, 200)
    with database_refusing_connections(pg_server, database_url):
        r = await ready_when(app_client, 503)
        body = r.json()
        assert "database" in body["failing"] and not body["checks"]["database"]["ok"]
        assert body["detail"].startswith("database: the database is unreachable"), body
        assert body["checks"]["embedding"]["ok"]  # the model is in memory: only the database fails
        live = await app_client.get("/health/live")
        assert live.status_code == 200 and live.json() == {"status": "live"}
        # Public metrics still answer: the app's own, and the database marked down.
        metrics = await app_client.get("/metrics")
        assert metrics.status_code == 200, metrics.text
        assert "rag_database_up 0.0" in metrics.text and "rag_ingest_tasks" not in metrics.text
    r = await ready_when(app_client, 200)
    assert r.json()["status"] == "ready"
    assert "rag_database_up 1.0" in (await app_client.get("/metrics")).text


async def test_a_database_that_hangs_is_not_ready_within_the_probes_bound(
    app_client: httpx.AsyncClient, pg_server: str, database_url: str
) -> None:
    """A database that takes the query and never answers (frozen, a network dropping packets): the
    probe waited for its cancelled query to unwind, which hung too, and never answered."""
    await ready_when(app_client, 200)  # the pool holds connections to this database
    ended, probe = await while_frozen(pg_server, database_url, app_client.get("/health/ready"))
    r = probe.result()
    assert ended, f"the probe answered only once the database did: {r.status_code} {r.text}"
    assert r.status_code == 503, r.text
    assert r.json()["checks"]["database"]["detail"] == "the database did not answer within 3 s"
    await ready_when(app_client, 200)


@pytest.mark.parametrize("path", ["/health/live", "/health/ready"])
async def test_the_probes_are_in_the_openapi_without_security(
    app_client: httpx.AsyncClient, path: str
) -> None:
    operation = (await app_client.get("/openapi.json")).json()["paths"][path]["get"]
    assert "security" not in operation

"""Database commands when DATABASE_URL names a database they cannot reach: one `error:` line saying so,
never the driver's traceback (psycopg's through SQLAlchemy, asyncpg's for backup and restore)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rag_server.infra.database import with_database

COMMANDS = [
    ("doctor",),
    ("documents", "list"),
    ("keys", "list"),
    ("migrate",),
    ("backup", "{dir}/b.ragbackup"),
]


def run_cli(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("RAG_")}
    env.update({"DATABASE_URL": url, "RAG_DATA_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    command = [sys.executable, "-m", "rag_server", *(a.format(dir=tmp_path) for a in args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a))
async def test_a_refused_connection_is_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    done = await asyncio.to_thread(run_cli, "postgresql://u:p@127.0.0.1:1/db", tmp_path, *args)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: cannot connect to the database (") and "Connect" in line, line
    assert line.endswith("is PostgreSQL running, and is DATABASE_URL right?") and ":p@" not in line


@pytest.mark.parametrize("args", [("doctor",), ("backup", "{dir}/b.ragbackup")], ids=lambda a: a[0])
async def test_a_database_that_does_not_exist_is_named(
    pg_server: str, tmp_path: Path, args: tuple[str, ...]
) -> None:
    done = await asyncio.to_thread(run_cli, with_database(pg_server, "no_such_db"), tmp_path, *args)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert 'database "no_such_db" does not exist' in done.stderr.strip().splitlines()[-1], done.stderr

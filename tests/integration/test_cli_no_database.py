"""A command run where there is no database (the wrong folder, no RAG_DATA_DIR or DATABASE_URL): a command
that only reads or changes what is there says so in one line and creates nothing, where it made a new,
empty embedded cluster, answered from it (an empty key list, say) and left its server running (QA,
2026-12-07). A command that sets up or fills a database creates it, and says so."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from rag_server.infra.embedded_postgres import ensure_embedded_postgres

READERS = [
    ("keys", "list"),
    ("documents", "list"),
    ("tasks", "list"),
    ("collections", "list"),
    ("check",),
    ("doctor",),
    ("backup", "{dir}/b.ragbackup"),
    ("export", "--collection", "default", "{dir}/out.jsonl"),
]


def run_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("RAG_")}
    env.update({"RAG_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"})
    command = [sys.executable, "-m", "rag_server", *(a.format(dir=data_dir.parent) for a in args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("args", READERS, ids=lambda a: " ".join(a[:2]))
async def test_a_command_finding_no_database_says_so_and_creates_none(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    data_dir = tmp_path / "data"
    done = await asyncio.to_thread(run_cli, data_dir, *args)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line == (
        f"error: no database in {data_dir} (RAG_DATA_DIR): run this where `rag-server up` runs, or set "
        "RAG_DATA_DIR (an absolute path) or DATABASE_URL to the database to use"
    )
    assert not (data_dir / "pg").exists()


async def test_creating_a_key_creates_the_database_and_says_so() -> None:
    root = Path(tempfile.mkdtemp(prefix="ragnodb-", dir="/tmp"))  # the cluster's system user reads /tmp
    data_dir = root / "data"
    try:
        made = await asyncio.to_thread(
            run_cli, data_dir, "keys", "create", "--name", "first", "--role", "admin"
        )
        assert made.returncode == 0, made.stderr
        assert f"no database in {data_dir / 'pg'} yet: created a new, empty one" in made.stderr
        listed = await asyncio.to_thread(run_cli, data_dir, "keys", "list")
        assert listed.returncode == 0 and "first" in listed.stdout, listed.stderr
        assert "created a new" not in listed.stderr
    finally:
        if (data_dir / "pg" / "PG_VERSION").exists():
            ensure_embedded_postgres(data_dir / "pg").stop()
        shutil.rmtree(root, ignore_errors=True)

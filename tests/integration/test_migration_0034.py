"""Migration 0034: each document keeps its name folded (0033's fold of Latin accents) and lowered, in a
stored generated column the name filter reads. Names stored before it get theirs; new ones get it at
their insert; the downgrade drops it."""

from __future__ import annotations

import asyncio
import unicodedata
from pathlib import Path

import asyncpg
from alembic import command

from rag_server.config import Settings
from rag_server.infra.migrations import alembic_config
from tests.conftest import create_database
from tests.integration.test_migration_0033 import insert

REVISION, DOWN_REVISION = "0034_name_filter_folds_accents", "0033_name_order_folds_accents"

FOLDED = {
    "École d'été 007.txt": "ecole d'ete 007.txt",  # digits kept as typed (no natural-order key)
    "Straße.pdf": "strasse.pdf",
    "ÆRØ.txt": "aero.txt",
    unicodedata.normalize("NFD", "Crème brûlée.txt"): "creme brulee.txt",
    "REPORT.TXT": "report.txt",
    "Отчёт.txt": "отчёт.txt",  # Cyrillic: lowered, its mark kept
    "東京.txt": "東京.txt",
}


async def folded(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch("SELECT filename, name_folded FROM documents")
    return {r["filename"]: r["name_folded"] for r in rows}


async def test_0034_keeps_each_name_folded_and_its_downgrade_drops_the_column(
    pg_server: str, tmp_path: Path
) -> None:
    url = await create_database(pg_server, "namefilter")
    cfg = alembic_config(url, Settings(database_url=url, data_dir=tmp_path))
    await asyncio.to_thread(command.upgrade, cfg, DOWN_REVISION)
    conn = await asyncpg.connect(url)
    try:
        before = list(FOLDED)[:4]
        await insert(conn, before)
        await asyncio.to_thread(command.upgrade, cfg, REVISION)
        await insert(conn, list(FOLDED)[4:])  # written after it: computed at the insert
        assert await folded(conn) == FOLDED

        await asyncio.to_thread(command.downgrade, cfg, DOWN_REVISION)
        columns = await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_name = 'documents' AND column_name = 'name_folded'"
        )
        assert columns == 0
        assert await conn.fetchval("SELECT count(*) FROM documents") == len(FOLDED)
        await asyncio.to_thread(command.upgrade, cfg, "head")
        assert await folded(conn) == FOLDED
    finally:
        await conn.close()

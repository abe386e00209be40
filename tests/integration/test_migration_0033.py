"""Migration 0033: the name order folds Latin accents (`rag_name_key` folds with `rag_fold_accents`, 0027's
letters), so "Émile" sorts among the E's and "école" ties with "ecole". The names stored before it are
keyed again; a name with nothing to fold (ASCII, Cyrillic, Greek, CJK) keeps its key byte for byte. The
downgrade gives back 0032's function, column and keys exactly."""

from __future__ import annotations

import asyncio
import importlib.util
import unicodedata
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
from alembic import command

from rag_server.config import Settings
from rag_server.infra.migrations import MIGRATIONS_DIR, alembic_config
from rag_server.text import fold_latin
from tests.conftest import create_database

REVISION, DOWN_REVISION = "0033_name_order_folds_accents", "0032_chat_search_per_owner"

# Each name, and the name without accents it now keys as (0032's key of that spelling).
FOLDED = {
    "Émile 10.txt": "emile 10.txt",
    "école.txt": "ecole.txt",
    "Straße 2.pdf": "strasse 2.pdf",
    "ÆRØ.txt": "aero.txt",
    "Øresund.txt": "oresund.txt",
    "Łódź 007.txt": "lodz 7.txt",
    "Þór.txt": "thor.txt",
    "Việt Nam.txt": "viet nam.txt",
    "Ax\u0301e.txt": "axe.txt",  # a mark after a Latin letter that has no composed form with it
    unicodedata.normalize("NFD", "Crème brûlée.txt"): "creme brulee.txt",  # stored decomposed
    "Отчёт café.txt": "Отчёт cafe.txt",  # the Cyrillic ё keeps its mark
}
# Names with nothing to fold: their keys do not change.
KEPT = [
    "Zeta.txt",
    "chapter 10.txt",
    "Яблоко 2.txt",
    "йогурт.txt",
    "ударе\u0301ние.txt",  # Cyrillic with a stress mark: kept
    "Άλφα.txt",
    "ωμέγα 3.txt",
    "東京 報告書.txt",
    "한국어.txt",
    "× ÷ ¿ ¡ «».txt",  # Latin-1 signs that are not letters
]


def migration_0027() -> ModuleType:
    path = MIGRATIONS_DIR / "versions" / "0027_bm25_ascii_folding.py"
    spec = importlib.util.spec_from_file_location("v27", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def insert(conn: asyncpg.Connection, names: list[str]) -> None:
    await conn.execute(
        "INSERT INTO documents (filename, file_type, content_type, size_bytes, sha256, status)"
        " SELECT n, 'txt', 'text/plain', 1, md5(n) || md5(n), 'ready' FROM unnest($1::text[]) AS n",
        names,
    )


async def keys(conn: asyncpg.Connection) -> dict[str, str]:
    return {
        r["filename"]: r["name_key"] for r in await conn.fetch("SELECT filename, name_key FROM documents")
    }


async def name_schema(conn: asyncpg.Connection) -> dict[str, Any]:
    """What 0032 and 0033 define: the functions, the column (expression, collation), its index, comments."""
    return {
        "functions": await conn.fetch(
            "SELECT p.proname, pg_get_functiondef(p.oid), obj_description(p.oid, 'pg_proc') FROM pg_proc p"
            " WHERE p.pronamespace = 'public'::regnamespace"
            " AND p.proname IN ('rag_name_key', 'rag_fold_accents')"
        ),
        "column": await conn.fetchrow(
            "SELECT a.attgenerated, a.attnotnull, a.attcollation::regcollation::text,"
            " pg_get_expr(d.adbin, d.adrelid), col_description(a.attrelid, a.attnum)"
            " FROM pg_attribute a JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
            " WHERE a.attrelid = 'documents'::regclass AND a.attname = 'name_key'"
        ),
        "indexes": await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'documents' ORDER BY 1"
        ),
        # The rewrite drops the column's statistics; the planner costs the listing's index scan with them.
        "analyzed": await conn.fetchval(
            "SELECT count(*) FROM pg_stats WHERE tablename = 'documents' AND attname = 'name_key'"
        ),
    }


async def test_0033_keys_accented_names_as_their_unaccented_spelling(pg_server: str, tmp_path: Path) -> None:
    url = await create_database(pg_server, "namefold")
    cfg = alembic_config(url, Settings(database_url=url, data_dir=tmp_path))
    await asyncio.to_thread(command.upgrade, cfg, DOWN_REVISION)
    conn = await asyncpg.connect(url)
    try:
        await insert(conn, [*FOLDED, *FOLDED.values(), *KEPT])
        await conn.execute("ANALYZE documents")
        before, schema_before = await keys(conn), await name_schema(conn)
        assert schema_before["analyzed"] == 1
        assert before["Émile 10.txt"] > before["Zeta.txt"]  # 0032: after the Z's

        await asyncio.to_thread(command.upgrade, cfg, REVISION)
        after = await keys(conn)
        assert (await name_schema(conn))["analyzed"] == 1
        assert {name: after[name] for name in FOLDED} == {
            name: before[plain] for name, plain in FOLDED.items()
        }
        assert {name: after[name] for name in [*FOLDED.values(), *KEPT]} == {
            name: before[name] for name in [*FOLDED.values(), *KEPT]
        }
        ordered = [
            r["filename"] for r in await conn.fetch("SELECT filename FROM documents ORDER BY name_key")
        ]
        assert ordered.index("Émile 10.txt") < ordered.index("Zeta.txt")
        # Every letter 0027 folds keys as the Python twin folds it (text.fold_latin), lower case.
        letters = [*migration_0027().FOLDED_LETTERS, "\u212b"]
        keyed = await conn.fetchval(
            "SELECT array_agg(rag_name_key(l) ORDER BY i)"
            " FROM unnest($1::text[]) WITH ORDINALITY AS u (l, i)",
            letters,
        )
        assert dict(zip(letters, keyed, strict=True)) == {
            letter: fold_latin(letter).lower() for letter in letters
        }
        assert all(key.isascii() and key.isalpha() for key in keyed)

        await asyncio.to_thread(command.downgrade, cfg, DOWN_REVISION)
        assert await keys(conn) == before
        assert await name_schema(conn) == schema_before
        assert not await conn.fetchval("SELECT to_regproc('rag_fold_accents') IS NOT NULL")
        await asyncio.to_thread(command.upgrade, cfg, "head")
        assert await keys(conn) == after
    finally:
        await conn.close()

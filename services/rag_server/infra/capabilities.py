"""What this database can do: extensions, versions, the BM25 engine. Shown by `doctor` and /health."""

from __future__ import annotations

from typing import Any, Literal

from rag_server.config import Settings
from rag_server.infra.admin import all_meta
from rag_server.infra.database import Executor

# Which BM25 implementation migration 0002 chose for this database (recorded in app_meta).
Bm25Engine = Literal["native", "pg_search"]


class SchemaMismatchError(RuntimeError):
    """The database was built for other settings (e.g. another embedding model), or migrated by a newer
    rag-server (infra/migrations.newer_schema)."""


# The embedding generations (rag_server.generations, migration 0011), when the table exists.
GENERATIONS_SQL = "SELECT id, provider, model, dim, state FROM embedding_generations ORDER BY id"


async def _generations(conn: Executor) -> list[dict[str, Any]]:
    if not await conn.fetchval("SELECT to_regclass('embedding_generations') IS NOT NULL"):
        return []
    return [dict(r) for r in await conn.fetch(GENERATIONS_SQL)]


async def check_embedding_settings(pool: Executor, settings: Settings) -> None:
    """Refuse to start with another embedding model or dimension than the stored vectors have: the
    database's first model (app_meta) or one whose vectors a re-embed keeps (`rag-server reembed`)."""
    meta = await all_meta(pool)
    stored = (meta.get("embedding_model"), meta.get("embedding_dim"))
    wanted = (settings.embedding_model, settings.embedding_dim)
    kept = {(g["model"], g["dim"]) for g in await _generations(pool) if g["state"] != "dropped"}
    if stored != wanted and wanted not in kept:
        raise SchemaMismatchError(
            f"this database stores embeddings from {stored[0]} ({stored[1]}-d), but the configuration "
            f"asks for {wanted[0]} ({wanted[1]}-d). Use the original RAG_EMBEDDING_MODEL/RAG_EMBEDDING_DIM, "
            "or point DATABASE_URL / RAG_DATA_DIR at a new database and re-ingest."
        )


async def capability_report(pool: Executor) -> dict[str, Any]:
    async with pool.acquire() as conn:
        server_version = await conn.fetchval("SHOW server_version")
        installed = {
            row["extname"]: row["extversion"]
            for row in await conn.fetch("SELECT extname, extversion FROM pg_extension")
        }
        meta = await all_meta(conn)
        pgmq_present = await conn.fetchval("SELECT to_regclass('pgmq.meta') IS NOT NULL")
        generations = await _generations(conn)
    bm25_engine = meta.get("bm25_engine", "none")
    # After `rag-server reembed` switched, the searched model is the active generation's.
    active = next((g for g in generations if g["state"] == "active"), None)
    embedding = (
        {"model": meta.get("embedding_model"), "dim": meta.get("embedding_dim")}
        if active is None
        else {"model": active["model"], "dim": active["dim"]}
    )
    return {
        "postgres": server_version,
        "extensions": {
            "vector": {"active": "vector" in installed, "version": installed.get("vector")},
            "pgmq": {
                "active": bool(pgmq_present),
                "version": installed.get("pgmq"),
                "install": meta.get("pgmq_install"),
            },
            "pg_search": {"active": "pg_search" in installed, "version": installed.get("pg_search")},
        },
        "bm25_engine": bm25_engine,
        "embedding": embedding,
        "embedding_generations": generations,
        "queue": meta.get("queue_name"),
    }

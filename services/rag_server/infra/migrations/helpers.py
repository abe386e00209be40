"""Small helpers for migration scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from alembic import context, op

from rag_server.config import Settings, get_settings


def execute_sql(sql: str, params: Sequence[Any] | None = None) -> None:
    """Run SQL on the migration's connection: a script verbatim, or one statement with `params` bound.

    Goes to the psycopg connection directly: SQLAlchemy's text() would read ':name' as a bind
    parameter. Without `params` psycopg sends the text untouched (a '%' in PL/pgSQL stays a '%');
    with them, each %s is bound by the driver, so values are never quoted by hand.
    """
    raw = op.get_bind().connection.driver_connection
    assert raw is not None
    raw.execute(sql, params)


def set_meta_sql(key: str, value: Any) -> None:
    """Insert or replace an app_meta key (the migration-time twin of `infra.admin.set_meta`)."""
    execute_sql(
        "INSERT INTO app_meta (key, value) VALUES (%s, %s::jsonb) "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
        (key, json.dumps(value)),
    )


def scalar(sql: str) -> Any:
    row = op.get_bind().exec_driver_sql(sql).first()
    return None if row is None else row[0]


def execute_on_native_bm25(sql: str) -> None:
    """Run a script that changes the native BM25 engine's pack (0014 on): nothing on a database whose
    BM25 is ParadeDB's pg_search, which has no pack."""
    if scalar("SELECT to_regclass('bm25_pack') IS NOT NULL"):
        execute_sql(sql)


def migration_settings() -> Settings:
    settings = context.config.attributes.get("settings")
    return settings if isinstance(settings, Settings) else get_settings()

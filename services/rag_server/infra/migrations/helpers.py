"""Small helpers for migration scripts."""

from __future__ import annotations

import json
import re
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


def concurrent_rebuild_sql(create_sql: str) -> list[str]:
    """The statements that replace an index by `create_sql`'s (`CREATE INDEX <name> ON ...`) without
    locking its table: reads and writes go on, and the old index serves until the new one is valid.

    ParadeDB's documented way to change a BM25 index's tokenizer (a second index built CONCURRENTLY, then
    the first dropped). The two renames are one short transaction, so `<name>` is always a valid index:
    a run stopped anywhere is run again from the top, dropping what a stopped run left (`<name>_next`,
    maybe invalid; `<name>_old`) and building again.
    """
    match = re.match(r"CREATE INDEX (\w+) (ON .*?);?\s*$", create_sql, re.DOTALL)
    if match is None:
        raise ValueError(f"not a CREATE INDEX <name> ON ... statement: {create_sql[:80]!r}")
    name, definition = match[1], match[2]
    building, retired = f"{name}_next", f"{name}_old"
    return [
        f"DROP INDEX CONCURRENTLY IF EXISTS {retired}",
        f"DROP INDEX CONCURRENTLY IF EXISTS {building}",
        f"CREATE INDEX CONCURRENTLY {building} {definition}",
        f"BEGIN; ALTER INDEX IF EXISTS {name} RENAME TO {retired}; "
        f"ALTER INDEX {building} RENAME TO {name}; COMMIT",
        f"DROP INDEX CONCURRENTLY IF EXISTS {retired}",
    ]


def rebuild_index_concurrently(create_sql: str) -> None:
    """Run `concurrent_rebuild_sql` outside the migration's transaction (CONCURRENTLY refuses to run in
    one): what the migration did before it is committed first."""
    with op.get_context().autocommit_block():
        for statement in concurrent_rebuild_sql(create_sql):
            execute_sql(statement)

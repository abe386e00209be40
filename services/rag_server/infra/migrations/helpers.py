"""Small helpers for migration scripts."""

from __future__ import annotations

from typing import Any

from alembic import context, op

from rag_server.config import Settings, get_settings


def execute_sql(sql: str) -> None:
    """Run a multi-statement SQL script verbatim on the migration's connection.

    Goes to the psycopg connection directly: SQLAlchemy's text() would read ':name' as a bind
    parameter and psycopg with parameters would read '%' as a placeholder (both occur in PL/pgSQL).
    """
    raw = op.get_bind().connection.driver_connection
    assert raw is not None
    raw.execute(sql)


def scalar(sql: str) -> Any:
    row = op.get_bind().exec_driver_sql(sql).first()
    return None if row is None else row[0]


def migration_settings() -> Settings:
    settings = context.config.attributes.get("settings")
    return settings if isinstance(settings, Settings) else get_settings()

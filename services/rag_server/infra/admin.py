"""SQL about the database itself: databases on a server and the app_meta keys.

Meta functions work on pool connections (jsonb codec registered) and on plain `asyncpg.connect`
connections alike: values go in as JSON text cast to jsonb and come back as text parsed here, so the
result never depends on which kind of connection a caller holds.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from rag_server.infra.database import Executor, with_database

# PostgreSQL silently truncates longer identifiers: a database created under a truncated name
# would never be found again under the name the caller asked for.
MAX_IDENTIFIER_BYTES = 63


def quote_ident(name: str) -> str:
    """`name` as a double-quoted SQL identifier (embedded quotes doubled)."""
    if not name or "\x00" in name:
        raise ValueError(f"not a valid identifier: {name!r}")
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(f"identifier longer than {MAX_IDENTIFIER_BYTES} bytes: {name!r}")
    return '"' + name.replace('"', '""') + '"'


@asynccontextmanager
async def connection(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection (no codecs) to `url`, closed on exit."""
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


# --- databases on a server (server_url: any database on that server, e.g. `postgres`) ---


async def database_exists(server_url: str, name: str) -> bool:
    async with connection(server_url) as server:
        return bool(await server.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))


async def list_databases(server_url: str, prefix: str = "") -> list[str]:
    """Names of the databases on the server that start with `prefix` (taken literally), sorted."""
    async with connection(server_url) as server:
        rows = await server.fetch(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY datname", prefix
        )
    return [row["datname"] for row in rows]


async def create_database(server_url: str, name: str) -> str:
    """Create an empty database `name` on the server; returns its URL."""
    quoted = quote_ident(name)
    async with connection(server_url) as server:
        await server.execute(f"CREATE DATABASE {quoted}")
    return with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    """Drop `name` if it exists, ending the sessions still connected to it."""
    quoted = quote_ident(name)
    async with connection(server_url) as server:
        await server.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")


async def reuse_or_recreate(
    server_url: str,
    name: str,
    is_complete: Callable[[asyncpg.Connection], Awaitable[bool]],
    fresh: bool = False,
) -> bool:
    """True when `name` exists and `is_complete` says its contents can be reused.

    Otherwise (missing, `fresh`, or a partial build) it is dropped and created empty: nothing is
    ever measured against half a build.
    """
    if await database_exists(server_url, name):
        if not fresh:
            async with connection(with_database(server_url, name)) as conn:
                if await is_complete(conn):
                    return True
        await drop_database(server_url, name)
    await create_database(server_url, name)
    return False


# --- app_meta: one jsonb value per key ---


async def row_counts(conn: Executor, tables: Mapping[str, str]) -> dict[str, int]:
    """label -> rows of `tables` (label -> qualified or public table name); a table this database lacks
    (a schema migrated by an older version, a queue not made yet) counts 0."""
    counts: dict[str, int] = {}
    for label, table in tables.items():
        exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
        counts[label] = int(await conn.fetchval(f"SELECT count(*) FROM {table}")) if exists else 0
    return counts


async def has_app_meta(conn: Executor) -> bool:
    """Whether migrations have created app_meta here (a new, empty database has none)."""
    return bool(await conn.fetchval("SELECT to_regclass('app_meta') IS NOT NULL"))


async def get_meta(conn: Executor, key: str, default: Any = None) -> Any:
    raw = await conn.fetchval("SELECT value::text FROM app_meta WHERE key = $1", key)
    return default if raw is None else json.loads(raw)


async def set_meta(conn: Executor, key: str, value: Any) -> None:
    """Insert or replace `key` with `value` (anything json.dumps accepts)."""
    await conn.execute(
        "INSERT INTO app_meta (key, value) VALUES ($1, $2::text::jsonb) "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
        key,
        json.dumps(value),
    )


async def add_meta_counts(conn: Executor, key: str, counts: Mapping[str, int]) -> None:
    """Add `counts` to the object of counters under `key` (created at 0), in the caller's transaction:
    figures that count what committed with them (retention's rows removed, for /metrics)."""
    await conn.execute(
        """
        INSERT INTO app_meta (key, value) VALUES ($1, $2::text::jsonb)
        ON CONFLICT (key) DO UPDATE SET updated_at = now(), value = (
            SELECT jsonb_object_agg(k, coalesce((app_meta.value ->> k)::bigint, 0)
                                       + coalesce((EXCLUDED.value ->> k)::bigint, 0))
            FROM jsonb_object_keys(app_meta.value || EXCLUDED.value) k)
        """,
        key,
        json.dumps(dict(counts)),
    )


async def delete_meta(conn: Executor, key: str) -> bool:
    """Remove `key`; True when it was there."""
    status = await conn.execute("DELETE FROM app_meta WHERE key = $1", key)
    return str(status) != "DELETE 0"


async def all_meta(conn: Executor) -> dict[str, Any]:
    rows = await conn.fetch("SELECT key, value::text AS value FROM app_meta ORDER BY key")
    return {row["key"]: json.loads(row["value"]) for row in rows}

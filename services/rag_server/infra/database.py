"""Connection URLs and the asyncpg pool shared by the server, the worker and the CLI."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from pgvector.asyncpg import register_vector

from rag_server.config import Settings
from rag_server.infra.embedded_postgres import ensure_embedded_postgres


def resolve_database_url(settings: Settings) -> str:
    """The libpq URL to use: DATABASE_URL when set, else the embedded server (started if needed)."""
    if settings.database_url:
        return plain_url(settings.database_url)
    return ensure_embedded_postgres(settings.embedded_pgdata).uri


def plain_url(url: str) -> str:
    """Strip a SQLAlchemy driver suffix (postgresql+asyncpg://) so libpq/asyncpg accept the URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {url!r}")
    base = scheme.split("+", 1)[0]
    if base == "postgres":
        base = "postgresql"
    if base != "postgresql":
        raise ValueError(f"DATABASE_URL must be a PostgreSQL URL, got scheme {scheme!r}")
    return f"{base}://{rest}"


def sqlalchemy_url(url: str, driver: str = "psycopg") -> str:
    return plain_url(url).replace("postgresql://", f"postgresql+{driver}://", 1)


def with_database(url: str, database: str) -> str:
    """The same server URL pointed at another database name."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(plain_url(url))
    return urlunsplit(parts._replace(path=f"/{database}"))


def _encode_json(value: Any) -> str:
    # Strings pass through untouched: pgmq's client hands over JSON it already serialised.
    # Our own code never binds a bare Python str as a jsonb value.
    return value if isinstance(value, str) else json.dumps(value)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(type_name, encoder=_encode_json, decoder=json.loads, schema="pg_catalog")
    await register_vector(conn)


async def create_pool(url: str, min_size: int = 2, max_size: int = 10, **kwargs: Any) -> asyncpg.Pool:
    """A pool whose connections decode jsonb to Python objects and vector to numpy arrays.

    Needs the schema in place (the `vector` type must exist): run migrations first.
    """
    pool = await asyncpg.create_pool(
        plain_url(url), min_size=min_size, max_size=max_size, init=_init_connection, **kwargs
    )
    assert pool is not None
    return pool

"""Connection URLs and the asyncpg pool shared by the server, the worker and the CLI."""

from __future__ import annotations

import errno
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import asyncpg
import numpy as np
from pgvector.asyncpg import register_vector

from rag_server.config import Settings
from rag_server.infra.embedded_postgres import ensure_embedded_postgres
from rag_server.infra.scoped_pool import ScopedPool


def resolve_database_url(settings: Settings) -> str:
    """The libpq URL to use: DATABASE_URL when set, else the embedded server (started if needed)."""
    if settings.database_url:
        return plain_url(settings.database_url)
    return ensure_embedded_postgres(settings.embedded_pgdata, settings.embedded_listen).uri


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


def as_user(url: str, user: str, password: str | None = None) -> str:
    """The same server and database, logged in as another role."""
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(plain_url(url))
    host = parts.netloc.rpartition("@")[2]
    secret = "" if password is None else quote(password, safe="")
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}:{secret}@{host}"))


def runtime_url(owner_url: str, settings: Settings) -> str:
    """Where the server and workers connect: the owner's server and database, as the runtime role."""
    password = settings.runtime_db_password
    return as_user(
        owner_url, settings.runtime_db_user, None if password is None else password.get_secret_value()
    )


def _encode_json(value: Any) -> str:
    # Strings pass through untouched: pgmq's client hands over JSON it already serialised.
    # Our own code never binds a bare Python str as a jsonb value.
    if isinstance(value, str):
        return value
    text = json.dumps(value)
    # jsonb keeps a number's digits, not its type: 1e+16 is stored as 10000000000000000 and read back as
    # an int. Python writes a float with an exponent from 1e16 up (each one whole), so those are written
    # out with ".0" (exact: the double's own integer), which jsonb keeps and reads back as a float.
    return _json_with_whole_floats(value) if "e+" in text else text


def _json_with_whole_floats(value: Any) -> str:
    if isinstance(value, float) and "e+" in repr(value):
        return f"{int(value)}.0"
    if isinstance(value, dict):
        items = (
            f"{json.dumps(k if isinstance(k, str) else json.dumps(k))}:{_json_with_whole_floats(v)}"
            for k, v in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_json_with_whole_floats(v) for v in value) + "]"
    return json.dumps(value)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(type_name, encoder=_encode_json, decoder=json.loads, schema="pg_catalog")
    await register_vector(conn)


async def _release_as_is(conn: asyncpg.Connection) -> None:
    """The pool's reset of a released connection: nothing beyond asyncpg's own rollback of an open
    transaction. Our pooled connections carry no session state (the scope's settings are
    transaction-local, advisory locks transaction-level, nothing else is SET; tested in
    tests/integration/test_access_database.py), so asyncpg's default reset (RESET ALL, UNLISTEN, CLOSE
    ALL, unlocking advisory locks) would be a round trip per release for nothing: a hybrid /search
    releases five connections (reports/bench-search-round-trips.md)."""


async def create_pool(url: str, min_size: int = 2, max_size: int = 10, **kwargs: Any) -> asyncpg.Pool:
    """A pool whose connections decode jsonb to Python objects and vector to numpy arrays.

    Needs the schema in place (the `vector` type must exist): run migrations first.
    """
    pool = await asyncpg.create_pool(
        plain_url(url),
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_release_as_is,
        **kwargs,
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def owner_connection(owner_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the tables' owner, outside row-level security, with the pool's codecs: for
    maintenance (VACUUM), bulk loads of the benches and the eval's peer tables. Never for requests."""
    conn = await asyncpg.connect(plain_url(owner_url))
    try:
        await _init_connection(conn)
        yield conn
    finally:
        await conn.close()


# The bound of a statement whose time grows with what it deletes (a collection's documents, chunks and
# their BM25 postings): beyond the API server's RAG_API_DB_TIMEOUT_S, which is for a database that hangs.
LONG_STATEMENT_TIMEOUT_S = 24 * 3600.0


# The transaction seam every store function takes as its first parameter (like pgmq's `conn=`): the
# scoped pool runs the call on a pooled connection of its own, a connection joins the caller's
# transaction.
Executor: TypeAlias = ScopedPool | asyncpg.Connection


@asynccontextmanager
async def transaction(conn: Executor) -> AsyncIterator[asyncpg.Connection]:
    """A transaction on `conn`: a new one on a pooled connection, or a savepoint inside the caller's."""
    if isinstance(conn, ScopedPool):
        async with conn.acquire() as pooled:
            if pooled.is_in_transaction():
                yield pooled
                return
            async with pooled.transaction():
                yield pooled
    else:
        async with conn.transaction():
            yield conn


@asynccontextmanager
async def connection(conn: Executor) -> AsyncIterator[asyncpg.Connection]:
    """One connection for several reads: a pooled one for the block, or the caller's."""
    if isinstance(conn, ScopedPool):
        async with conn.acquire() as pooled:
            yield pooled
    else:
        yield conn


# SQLSTATE classes that mean "try again later": connection exception (08), transaction rollback (40:
# serialization, deadlock), insufficient resources (53), object not in prerequisite state (55: a database
# that does not accept connections yet), operator intervention (57: shutdown, backend terminated).
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "55", "57"})

# OS errors that mean the server cannot be reached (a missing unix socket is ENOENT), not a local bug.
_UNREACHABLE_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ENOENT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ETIMEDOUT,
        errno.EPIPE,
    }
)


def is_transient_db_error(exc: BaseException) -> bool:
    """The database is unavailable right now (a retry may succeed), as opposed to a bad query or a bug.

    The one definition: the API answers 503 for these, the worker puts the task back in the queue.
    """
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None)
        return isinstance(sqlstate, str) and sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES
    if type(exc) is asyncpg.InterfaceError:
        # "connection is closed", "pool is closing": the connection went away under the query. Its
        # subclasses (DataError: a bad query argument, ClientConfigurationError...) are bugs, not outages.
        return "closed" in str(exc) or "closing" in str(exc)
    if type(exc) is asyncpg.InternalClientError:
        # The server ended the session on its own (a terminated backend, a replica restarting) and
        # asyncpg was still reading that error (protocol state 2, "error consume") when the next
        # statement (a COMMIT) was sent; a moment later the same failure reads "connection is closed".
        # Any other InternalClientError is a misuse of a connection: a bug.
        return "another operation (2) is in progress" in str(exc)
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return isinstance(exc, OSError) and exc.errno in _UNREACHABLE_ERRNOS


def retry_sentence(exc: BaseException) -> str | None:
    """What a client is told (the API's 503, an MCP tool's error) when a retry may cure the failure: a
    lost race with a concurrent transaction, a database that did not answer in time (a statement past
    RAG_API_DB_TIMEOUT_S), or one that is unavailable; None for anything else (a bug)."""
    if is_conflict_db_error(exc):
        return "the request conflicted with a concurrent request; retry it"
    if isinstance(exc, TimeoutError):
        return "the database did not answer in time, retry shortly"
    if is_disk_full(exc):
        return "the database's disk is full: retry once space is freed on it"
    if is_transient_db_error(exc):
        return "the database is unavailable, retry shortly"
    return None


def is_disk_full(exc: BaseException) -> bool:
    """PostgreSQL could not extend a file (SQLSTATE 53100): it still answers, so "unavailable" sent an
    operator after a database that is up, while what cures it is freeing space on its disk."""
    return isinstance(exc, asyncpg.PostgresError) and getattr(exc, "sqlstate", None) == "53100"


def unavailable_reason(exc: BaseException) -> str:
    """A task's reason while the database cannot take its work (retried without counting a failure)."""
    if is_disk_full(exc):
        name = exc.__class__.__name__
        return f"The database was unavailable ({name}: its disk is full; retried once space is freed)."
    return f"The database was unavailable ({exc.__class__.__name__})."


def is_conflict_db_error(exc: BaseException) -> bool:
    """A transient error that is no outage: the transaction lost to a concurrent one (SQLSTATE class
    40: serialization failure 40001, deadlock 40P01). Retrying the request may succeed at once; saying
    "the database is unavailable" would send an operator after a database that is fine."""
    sqlstate = getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None
    return isinstance(sqlstate, str) and sqlstate.startswith("40")


def vector_array(value: object) -> np.ndarray:
    """A `vector` column's value as a float32 array: pgvector's asyncpg codec hands back an ndarray or a
    Vector object (to_numpy), by package version (langchain-postgres caps it below 0.4 in dev)."""
    to_numpy = getattr(value, "to_numpy", None)
    return np.asarray(to_numpy() if to_numpy is not None else value, dtype=np.float32).reshape(-1)


def vector_literal(vector: np.ndarray) -> str:
    """pgvector's text form: asyncpg cannot bind an array of vector values, text casts cleanly in unnest."""
    return "[" + ",".join(f"{x:.7g}" for x in vector.tolist()) + "]"


# SQLSTATEs of a connection that could not be made: class 08 (connection exception), 28 (the user or its
# password refused), 3D000 (no such database), 57P03 (starting up or shutting down), 53300 (too many
# connections).
_NO_CONNECTION_SQLSTATES = ("08", "28", "3D000", "57P03", "53300")


def unreachable_database(exc: BaseException) -> str | None:
    """One sentence when `exc` (or what caused it) says the database could not be reached or refused the
    connection, else None. For the command line, which would otherwise print the driver's traceback."""
    import psycopg

    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        sqlstate = getattr(link, "sqlstate", None)
        if (
            isinstance(link, psycopg.OperationalError)
            or (isinstance(sqlstate, str) and sqlstate.startswith(_NO_CONNECTION_SQLSTATES))
            or isinstance(link, ConnectionError | socket.gaierror)
            or (isinstance(link, OSError) and link.errno in _UNREACHABLE_ERRNOS and link.filename is None)
        ):
            said = " ".join(str(link).split("\n")[0].split()) or type(link).__name__
            return (
                f"cannot connect to the database ({said}): is PostgreSQL running, and is DATABASE_URL right?"
            )
        link = link.__cause__ or link.__context__
    return None

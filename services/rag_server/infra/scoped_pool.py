"""Row-level security scopes and the pool that applies them (docs/decisions/0010-access-control.md).

The policies of migration 0004 read three per-transaction settings; `ScopedPool` sets them at the
start of every transaction it hands out, from the request's scope (a ContextVar bound by the API's
authentication) or the pool's default.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias
from uuid import UUID

import asyncpg


@dataclass(frozen=True)
class DbScope:
    """What row-level security lets a transaction see and do (the policies of migration 0004 read it).

    `collections` None: every collection. `role`: reader/editor/admin (an API key's) or system (the
    worker, the CLI, the eval). `key_id`: the API key; chat sessions it creates are its own.
    """

    collections: tuple[UUID, ...] | None
    role: str
    key_id: UUID | None = None

    def settings(self) -> tuple[str, str, str]:
        ids = "*" if self.collections is None else "{" + ",".join(map(str, self.collections)) + "}"
        return ids, self.role, "" if self.key_id is None else str(self.key_id)


Isolation: TypeAlias = Literal["read_committed", "repeatable_read", "serializable"]

SYSTEM_SCOPE = DbScope(collections=None, role="system")

# The scope of the request being served (api/deps.py binds it after authenticating the key). A
# ContextVar so that tasks a request spawns (legs run concurrently, shielded writes) inherit it.
_request_scope: ContextVar[DbScope | None] = ContextVar("rag_request_scope", default=None)


def bind_scope(scope: DbScope | None) -> Token[DbScope | None]:
    return _request_scope.set(scope)


def request_scope() -> DbScope | None:
    """The scope bound by the request being served (None outside a request)."""
    return _request_scope.get()


def reset_scope(token: Token[DbScope | None]) -> None:
    _request_scope.reset(token)


class ScopedPool:
    """The runtime's pool. Every connection it hands out is inside a transaction whose row-level
    security settings are the current request's scope (`set_config(..., true)`: they end with the
    transaction, so a pooled connection never carries one request's scope into the next).

    Outside a request the pool's `default` applies: SYSTEM_SCOPE for the worker and the CLI, None for
    the API server, where a query that runs before authentication (or without it) sees no row.
    """

    def __init__(self, pool: asyncpg.Pool, default: DbScope | None, timeout: float | None = None) -> None:
        self.raw = pool
        self.default = default
        # The bound on getting a connection (a free one, or a new one made) and on handing it back; None:
        # none. The API server's is RAG_API_DB_TIMEOUT_S, like its statements'.
        self.timeout = timeout

    @property
    def scope(self) -> DbScope | None:
        return _request_scope.get() or self.default

    @asynccontextmanager
    async def acquire(
        self,
        *,
        isolation: Isolation | None = None,
        readonly: bool = False,
        settings: Mapping[str, str] | None = None,
    ) -> AsyncIterator[asyncpg.Connection]:
        """A connection in a scoped transaction (`isolation`, `readonly`: its options; `settings`: more
        transaction-local settings, set in the same round trip as the scope's). Without a scope or
        settings: no transaction, and the policies show nothing."""
        scope = self.scope
        pairs = list(zip(SCOPE_SETTINGS, scope.settings(), strict=True)) if scope else []
        pairs += list((settings or {}).items())
        async with self.raw.acquire(timeout=self.timeout) as conn:
            if not pairs:
                yield conn
                return
            async with conn.transaction(isolation=isolation, readonly=readonly):
                await set_local(conn, pairs)
                yield conn

    def has_free_connection(self) -> bool:
        """Whether `acquire` would get a connection now (an idle one, or room to open one) rather than
        wait for another holder to release one. Checked and acquired with no await between them, no
        other task can take it first."""
        # asyncpg queues its free connection holders, connected or not; get_size() and get_idle_size()
        # count connected ones only, so a holder still connecting for another task would look free.
        # tests/integration/test_retrievers.py checks this against the installed asyncpg.
        return bool(self.raw._queue.qsize())

    async def execute(self, query: str, *args: Any) -> str:
        async with self.acquire() as conn:
            return str(await conn.execute(query, *args))

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.acquire() as conn:
            return list(await conn.fetch(query, *args))

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self.acquire() as conn:
            return await conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args)

    async def close(self) -> None:
        await self.raw.close()


SCOPE_SETTINGS = ("rag.collections", "rag.role", "rag.key_id")


async def set_local(conn: asyncpg.Connection, pairs: Sequence[tuple[str, str]]) -> None:
    """Transaction-local settings (`set_config(name, value, true)`), all in one round trip."""
    calls = ", ".join(f"set_config(${2 * i + 1}, ${2 * i + 2}, true)" for i in range(len(pairs)))
    await conn.execute(f"SELECT {calls}", *[part for pair in pairs for part in pair])

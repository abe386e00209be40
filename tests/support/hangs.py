"""A database that hangs, on demand: every backend of a database stopped (SIGSTOP, as a frozen host or a
network dropping packets looks to its clients), or one table locked by another transaction."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeVar
from urllib.parse import urlsplit

import asyncpg
import psutil
import psycopg

from tests.support.watchdog import task_stacks

T = TypeVar("T")

# Far beyond any bound under test: what is checked is that a call ends while the database hangs.
PATIENCE_S = 30.0


def backends(pg_server: str, database_url: str) -> list[int]:
    """The server processes of every connection to `database_url`'s database (a pool's, say)."""
    database = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(pg_server, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (database,)
        ).fetchall()
    return [row[0] for row in rows]


async def while_frozen(
    pg_server: str, database_url: str, call: Awaitable[T], *, whole: bool = False
) -> tuple[bool, asyncio.Future[T]]:
    """Run `call` while every backend of the database is stopped, and with `whole` the server's main
    process too (a new connection is then never answered): (whether it ended before they were let go
    again, its task). They are always let go."""
    # No await before the freeze: `call` may be tasks already scheduled (a gather), which must meet the
    # database frozen, not start their statements first.
    frozen = backends(pg_server, database_url)
    assert frozen, "no connection to freeze: make one first"
    if whole:
        frozen.append(psutil.Process(frozen[0]).ppid())
    try:
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        task = asyncio.ensure_future(call)
        await asyncio.wait({task}, timeout=PATIENCE_S)
        ended = task.done()
        if not ended:  # shown with the test's failure: where the call waits
            print(f"still waiting after {PATIENCE_S:.0f} s, before the database is let go:\n{task_stacks()}")
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    await asyncio.wait({task})
    return ended, task


@asynccontextmanager
async def locked(database_url: str, sql: str, *args: object) -> AsyncIterator[None]:
    """What `sql` locks (a LOCK TABLE, a SELECT ... FOR UPDATE) held by another transaction, as the
    database's owner, while inside."""
    owner = await asyncpg.connect(database_url)
    try:
        async with owner.transaction():
            await owner.execute(sql, *args)
            yield
    finally:
        await owner.close()


def table_locked(database_url: str, table: str) -> AbstractAsyncContextManager[None]:
    """`table` locked ACCESS EXCLUSIVE (no read gets through) by another transaction while inside."""
    return locked(database_url, f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")

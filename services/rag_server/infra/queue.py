"""The pgmq ingestion queue: installation (from a migration) and a typed async client.

Every method takes an optional asyncpg connection so a send or delete can be part of the
caller's transaction (upload + enqueue, chunks + task done + delete are each one transaction).
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:  # pgmq's package imports its psycopg and SQLAlchemy clients too (~0.3 s): when used
    from pgmq import Message
    from pgmq.async_queue import PGMQueue

logger = logging.getLogger(__name__)

__all__ = ["IngestQueue", "install_pgmq"]


def install_pgmq() -> str:
    """Install pgmq on the migration's connection, once. Returns how it is installed.

    `CREATE EXTENSION` where the server offers pgmq; otherwise the SQL bundled in the pgmq PyPI
    package, which must never run twice (it is not re-entrant), hence the existence check.
    """
    from pgmq.install import get_embedded_install_sql, get_embedded_sql_version

    from rag_server.infra.migrations.helpers import execute_sql, scalar

    extension_version = "SELECT extversion FROM pg_extension WHERE extname = 'pgmq'"
    if scalar("SELECT to_regclass('pgmq.meta') IS NOT NULL"):
        version = scalar(extension_version)
        return f"extension {version}" if version else "sql (pre-existing)"
    if scalar("SELECT 1 FROM pg_available_extensions WHERE name = 'pgmq'"):
        execute_sql("CREATE EXTENSION pgmq")
        return f"extension {scalar(extension_version)}"
    execute_sql(get_embedded_install_sql())
    return f"sql {get_embedded_sql_version()}"


def queue_table(name: str) -> str:
    """The table holding a pgmq queue's messages. Settings.queue_name's pattern allows only [a-z0-9_]:
    safe as an identifier."""
    return f'pgmq."q_{name}"'


def archive_table(name: str) -> str:
    """The table holding a pgmq queue's archived messages."""
    return f'pgmq."a_{name}"'


class IngestQueue:
    """One named pgmq queue over the shared asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool, name: str) -> None:
        self.name = name
        self.table = queue_table(name)
        self.archive_table = archive_table(name)
        self._pool = pool

    @cached_property
    def _client(self) -> PGMQueue:
        from pgmq.async_queue import PGMQueue

        return PGMQueue(pool=self._pool, init_extension=False)

    async def send(self, message: dict[str, Any], conn: asyncpg.Connection | None = None) -> int:
        return int(await self._client.send(self.name, message, conn=conn))

    async def read(self, visibility_timeout_s: int, qty: int = 1) -> list[Message]:
        messages = await self._client.read(self.name, vt=visibility_timeout_s, qty=qty)
        if messages is None:
            return []
        return messages if isinstance(messages, list) else [messages]

    async def extend(
        self, msg_id: int, visibility_timeout_s: int, conn: asyncpg.Connection | None = None
    ) -> None:
        """Push the message's visibility out again while its work is still running (0: visible now)."""
        await self._client.set_vt(self.name, msg_id, visibility_timeout_s, conn=conn)

    async def delete(self, msg_id: int, conn: asyncpg.Connection | None = None) -> bool:
        return bool(await self._client.delete(self.name, msg_id, conn=conn))

    async def archive(self, msg_id: int, conn: asyncpg.Connection | None = None) -> bool:
        return bool(await self._client.archive(self.name, msg_id, conn=conn))

    async def delete_archived(self, msg_id: int, conn: asyncpg.Connection) -> bool:
        """Remove a message from the archive (pgmq has no call for it)."""
        sql = f"DELETE FROM {self.archive_table} WHERE msg_id = $1 RETURNING true"
        return bool(await conn.fetchval(sql, msg_id))

    async def depth(self) -> int:
        return int((await self._client.metrics(self.name)).queue_length)

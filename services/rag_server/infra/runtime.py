"""Start-up shared by the server, the worker and the CLI: database, migrations, checks, pool."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from rag_server.config import Settings
from rag_server.infra.capabilities import check_embedding_settings
from rag_server.infra.database import create_pool, resolve_database_url
from rag_server.infra.embeddings import Embedder, get_embedder, release_embedders
from rag_server.infra.migrations import upgrade_to_head
from rag_server.infra.queue import IngestQueue

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    database_url: str
    pool: asyncpg.Pool
    queue: IngestQueue

    @property
    def embedder(self) -> Embedder:
        return get_embedder(self.settings)


@asynccontextmanager
async def open_runtime(
    settings: Settings, *, migrate: bool = True, load_embedder: bool = False
) -> AsyncIterator[Runtime]:
    database_url = await asyncio.to_thread(resolve_database_url, settings)
    if migrate:
        await asyncio.to_thread(upgrade_to_head, database_url, settings)
    pool = await create_pool(database_url, settings.db_pool_min, settings.db_pool_max)
    try:
        await check_embedding_settings(pool, settings)
        if load_embedder:
            await asyncio.to_thread(get_embedder, settings)
        yield Runtime(settings, database_url, pool, IngestQueue(pool, settings.queue_name))
    finally:
        await release_embedders()
        await pool.close()

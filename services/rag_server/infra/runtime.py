"""Start-up shared by the server, the worker and the CLI: database, migrations, checks, pool.

The Runtime owns what used to be process-wide caches: the embedder, the chat LLM and the BM25 engine
of its database. A caller (tests, scripts) may hand in its own embedder or LLM.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
from llama_index.core.llms import LLM

from rag_server.config import Settings
from rag_server.infra.capabilities import check_embedding_settings
from rag_server.infra.database import create_pool, resolve_database_url
from rag_server.infra.embeddings import Embedder, LazyEmbedder
from rag_server.infra.llm import configured_llm
from rag_server.infra.migrations import upgrade_to_head
from rag_server.infra.queue import IngestQueue

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    database_url: str
    pool: asyncpg.Pool
    queue: IngestQueue
    embedder: Embedder
    # None: answers are extractive; `llm_error` then says why when an LLM was configured but unusable.
    llm: LLM | None = None
    llm_error: str | None = None
    # Fixed by migration 0002 for the life of the database: read once (retrieval.service.bm25_engine).
    bm25_engine: str | None = None


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    migrate: bool = True,
    load_embedder: bool = False,
    embedder: Embedder | None = None,
    llm: LLM | None = None,
) -> AsyncIterator[Runtime]:
    """Open the database (migrated unless `migrate=False`) and build the runtime's services.

    Without `embedder` the settings' one is built, lazily unless `load_embedder` (a server loads the
    model at start-up; `rag-server migrate` never does). Without `llm` the settings' one is built;
    building never contacts the provider.
    """
    database_url = await asyncio.to_thread(resolve_database_url, settings)
    if migrate:
        await asyncio.to_thread(upgrade_to_head, database_url, settings)
    pool = await create_pool(database_url, settings.db_pool_min, settings.db_pool_max)
    if embedder is None:
        embedder = LazyEmbedder(settings)
    llm_error = None
    if llm is None:
        llm, llm_error = configured_llm(settings)
    try:
        await check_embedding_settings(pool, settings)
        if load_embedder and isinstance(embedder, LazyEmbedder):
            await asyncio.to_thread(embedder.load)
        queue = IngestQueue(pool, settings.queue_name)
        yield Runtime(settings, database_url, pool, queue, embedder, llm=llm, llm_error=llm_error)
    finally:
        # HTTP embedders keep a keep-alive client per event loop: release this loop's.
        await embedder.aclose()
        await pool.close()

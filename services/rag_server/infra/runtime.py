"""Start-up shared by the server, the worker and the CLI: database, migrations, checks, pool.

The Runtime owns what used to be process-wide caches: the embedder, the chat LLM and the BM25 engine
of its database. A caller (tests, scripts) may hand in its own embedder or LLM.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg
from pydantic import ValidationError

from rag_server.config import Settings
from rag_server.errors import ConflictError, InvalidInputError, NotFoundError
from rag_server.infra.capabilities import Bm25Engine, check_embedding_settings
from rag_server.infra.database import create_pool, plain_url, resolve_database_url, runtime_url
from rag_server.infra.embeddings import Embedder, EmbedderRole, EmbeddingError, LazyEmbedder
from rag_server.infra.llm import configured_llm
from rag_server.infra.migrations import migrate as migrate_database
from rag_server.infra.queue import IngestQueue
from rag_server.infra.replicas import ReadRouting, ReplicaPool
from rag_server.infra.scoped_pool import SYSTEM_SCOPE, DbScope, ScopedPool, request_scope

if TYPE_CHECKING:  # LlamaIndex: seconds to import; only commands that chat, chunk or evaluate load it
    from llama_index.core.llms import LLM

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    database_url: str
    # Connected as the runtime role (row-level security applies); scoped by the request or `scope`.
    pool: ScopedPool
    queue: IngestQueue
    embedder: Embedder
    # Fixed by migration 0002 for the life of the database: read once (retrieval.service.bm25_engine).
    bm25_engine: Bm25Engine | None = None
    # (LLM, why it is unusable), built on first use: only a process that answers chat needs it.
    _llm: tuple[LLM | None, str | None] | None = field(default=None, repr=False)
    # rag_server.generations.active.GenerationCache (the active embedding generation and the embedders
    # of later generations), built on first use; typed loosely so infra does not import the domain.
    generations: Any = field(default=None, repr=False)
    # The read replicas (RAG_READ_DATABASE_URLS) when this process serves reads from them (the API).
    reads: ReadRouting | None = field(default=None, repr=False)

    def read_pool(self) -> ScopedPool:
        """The pool a read-only call of the current request may use: a replica that has replayed the
        principal's own writes (and the position its client sent in X-Rag-Read-After) and is within the
        lag bound, else the primary."""
        return self.pool if self.reads is None else self.reads.current_pool()

    async def remember_write(self) -> int | None:
        """Hold the current principal's reads to the primary's position now (after a write this request
        observed but did not make, e.g. a worker's); returns it, None without replicas."""
        return None if self.reads is None else await self.reads.record_write(request_scope())

    def chat_llm(self) -> tuple[LLM | None, str | None]:
        """The chat LLM (None: answers are extractive) and, when one is configured but unusable, why."""
        if self._llm is None:
            self._llm = configured_llm(self.settings)
        return self._llm


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    migrate: bool = True,
    load_embedder: EmbedderRole | None = None,
    embedder: Embedder | None = None,
    llm: LLM | None = None,
    scope: DbScope | None = SYSTEM_SCOPE,
    read_replicas: bool = False,
    db_timeout_s: float | None = None,
) -> AsyncIterator[Runtime]:
    """Open the database (migrated unless `migrate=False`) and build the runtime's services.

    Without `embedder` the settings' one is built, lazily unless `load_embedder` says what this process
    embeds (a worker "documents"; a server "queries": also the query encoder when its precision differs;
    `rag-server migrate` loads no model), and closed with the runtime; a handed-in one
    stays its owner's. Without `llm` the settings' one is built on first use. `scope`: what its queries
    see outside a request (the API server passes None: nothing until a request binds its key's scope).
    `read_replicas`: also open RAG_READ_DATABASE_URLS and check them in the background (the API server).
    `db_timeout_s`: the bound on each statement of its pools, on making a connection and on waiting for
    one (the API server's RAG_API_DB_TIMEOUT_S), None for none.
    """
    if embedder is not None and embedder.dim != settings.embedding_dim:
        raise ValueError(
            f"the embedder makes {embedder.dim}-d vectors, RAG_EMBEDDING_DIM={settings.embedding_dim}"
        )
    database_url = await asyncio.to_thread(resolve_database_url, settings)
    if migrate:
        await migrate_database(database_url, settings)
    # With a bound, every wait on the database has it: a statement, a connection made, one waited for.
    bounds = {} if db_timeout_s is None else {"command_timeout": db_timeout_s, "timeout": db_timeout_s}
    raw = await _runtime_pool(database_url, settings, settings.db_pool_min, **bounds)
    pool = ScopedPool(raw, scope, db_timeout_s)
    reads: ReadRouting | None = None
    owned: LazyEmbedder | None = None
    if embedder is None:
        embedder = owned = LazyEmbedder(settings)
    try:
        if read_replicas and settings.read_replica_urls:
            reads = await _open_replicas(settings, pool, scope, db_timeout_s)
        await check_embedding_settings(pool, settings)
        if owned is not None and load_embedder is not None:
            await asyncio.to_thread(owned.load, load_embedder)
        queue = IngestQueue(raw, settings.queue_name)
        runtime = Runtime(
            settings,
            database_url,
            pool,
            queue,
            embedder,
            _llm=None if llm is None else (llm, None),
            reads=reads,
        )
        checks = None if reads is None else asyncio.create_task(reads.run())
        try:
            yield runtime
        finally:
            if checks is not None:
                checks.cancel()
                await asyncio.gather(checks, return_exceptions=True)
            if runtime.generations is not None:  # later generations' HTTP embedders: this loop's clients
                await runtime.generations.aclose()
    finally:
        if owned is not None:  # HTTP embedders keep a keep-alive client per event loop: release this loop's
            await owned.aclose()
        if reads is not None:
            await reads.close()
        await pool.close()


async def _runtime_pool(url: str, settings: Settings, min_size: int, **kwargs: Any) -> asyncpg.Pool:
    """A pool on `url`'s server and database logged in as the runtime role: row-level security applies."""
    return await create_pool(runtime_url(url, settings), min_size, settings.db_pool_max, **kwargs)


async def _open_replicas(
    settings: Settings, primary: ScopedPool, scope: DbScope | None, db_timeout_s: float | None
) -> ReadRouting:
    """A pool per replica, logged in as the runtime role like the primary's (row-level security applies
    the same way); none connects yet (min size 0), so a replica that is down never stops the start-up.
    One check runs before the first request."""
    pools = []
    for url in settings.read_replica_urls:
        raw = await _runtime_pool(
            plain_url(url), settings, 0, timeout=settings.read_replica_timeout_s, command_timeout=db_timeout_s
        )
        pools.append((url, ReplicaPool(raw, scope, primary)))
    reads = ReadRouting(
        primary,
        pools,
        max_lag_s=settings.read_replica_max_lag_s,
        interval_s=settings.read_replica_check_interval_s,
        timeout_s=settings.read_replica_timeout_s,
    )
    await reads.check()
    return reads


def run_with_runtime(settings: Settings, work: Callable[[Runtime], Awaitable[int | None]]) -> int:
    """For CLI commands that work straight on the database (no server needed), with the system scope:
    exit status the work's (None: 0), or 1 after printing what the domain or the embedding service
    refused (on stderr: stdout is the command's output, which a script may read or pipe)."""

    async def run() -> int | None:
        async with open_runtime(settings, migrate=True) as runtime:
            return await work(runtime)

    try:
        status = asyncio.run(run())
    except ValidationError as exc:  # a model built from an argument: pydantic's many lines, as one
        from rag_server.cli_args import refusal

        print(f"error: {refusal(exc)}", file=sys.stderr)
        return 1
    except (NotFoundError, ConflictError, InvalidInputError, ValueError, EmbeddingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return status or 0

"""Which generation a process searches, and the embedder of each generation, per Runtime.

The active generation is read from the database at most once per ACTIVE_TTL_S per process, so a server
or worker picks up a switch (or a rollback) within seconds, without a restart, for one tiny query per
interval. A search resolves the generation ONCE and uses it for both the query embedding and the vector
query: a switch in between cannot pair a query vector with another model's index. The old generation's
vectors stay until `--finalize`, so a process still on it during those seconds searches correctly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rag_server.generations import store
from rag_server.generations.store import Generation
from rag_server.infra.embeddings import Embedder, build_embedder, model_settings
from rag_server.infra.runtime import Runtime

logger = logging.getLogger(__name__)

ACTIVE_TTL_S = 2.0


@dataclass
class GenerationCache:
    active: Generation | None = None
    read_at: float = 0.0
    embedders: dict[int, Embedder] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def aclose(self) -> None:
        for embedder in self.embedders.values():
            await embedder.aclose()


def _cache(runtime: Runtime) -> GenerationCache:
    if not isinstance(runtime.generations, GenerationCache):
        runtime.generations = GenerationCache()
    return runtime.generations


async def searched_generation(runtime: Runtime) -> Generation:
    """The active generation, at most ACTIVE_TTL_S old. When the database cannot be read and a value is
    known, the known one is used (the search itself will report the outage if it persists)."""
    cache = _cache(runtime)
    if cache.active is not None and time.monotonic() - cache.read_at < ACTIVE_TTL_S:
        return cache.active
    try:
        active = await store.active_generation(runtime.pool)
    except Exception:
        if cache.active is None:
            raise
        logger.warning("could not read the active embedding generation; still using %s", cache.active.id)
        return cache.active
    if cache.active is not None and cache.active.id != active.id:
        logger.info("embedding generation switched: %s -> %s", cache.active.describe(), active.describe())
    cache.active, cache.read_at = active, time.monotonic()
    return active


async def embedder_for(runtime: Runtime, generation: Generation) -> Embedder:
    """The runtime's own embedder for the generation of the configured model (generation 1, or the new
    one when the configuration names it after a switch: open_runtime accepts either); any other
    generation's is built from its recorded provider, model, dimension and base URL (a local model is
    loaded in a thread)."""
    configured = (runtime.settings.embedding_model, runtime.settings.embedding_dim)
    if configured == (generation.model, generation.dim):
        return runtime.embedder
    cache = _cache(runtime)
    embedder = cache.embedders.get(generation.id)
    if embedder is None:
        async with cache.lock:
            embedder = cache.embedders.get(generation.id)
            if embedder is None:
                settings = model_settings(
                    runtime.settings,
                    generation.provider,
                    generation.model,
                    generation.dim,
                    generation.base_url,
                )
                embedder = await asyncio.to_thread(build_embedder, settings)
                cache.embedders[generation.id] = embedder
    return embedder


async def embed_query(runtime: Runtime, generation: Generation, query: str) -> np.ndarray:
    embedder = await embedder_for(runtime, generation)
    return np.asarray(await embedder.embed_query(query), dtype=np.float32)


async def embed_texts(runtime: Runtime, generation: Generation, texts: Sequence[str]) -> np.ndarray:
    embedder = await embedder_for(runtime, generation)
    return await embedder.embed(list(texts))

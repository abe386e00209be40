"""The workers' side of a re-embed: backfill messages, and the vectors every chunk writer embeds.

A backfill message is {kind: "reembed", generation, first, last}: give every chunk with an id in
[first, last] a vector of the generation. It goes through the ingestion queue and is processed by the
ordinary workers, batch by batch: each batch's vectors are upserted (idempotent) in one transaction
that also pushes the message's visibility out, and the message is deleted once no chunk of its range
is missing a vector. A worker killed mid-batch loses that batch only: the message reappears after its
visibility timeout and the next worker embeds just the chunks still missing (progress = chunks with a
vector of the generation / all chunks).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import numpy as np

from rag_server.errors import NotFoundError
from rag_server.generations import store
from rag_server.generations.active import embedder_for
from rag_server.infra.database import is_transient_db_error, transaction
from rag_server.infra.embeddings import EmbeddingError
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.chunking import Chunk
from rag_server.ingestion.pipeline import embed_chunks

if TYPE_CHECKING:
    from pgmq import Message

logger = logging.getLogger(__name__)

T = TypeVar("T")

REEMBED_KIND = "reembed"


def reembed_message(generation_id: int, first: int, last: int) -> dict[str, Any]:
    return {"kind": REEMBED_KIND, "generation": generation_id, "first": first, "last": last}


def is_reembed(payload: object) -> bool:
    return isinstance(payload, dict) and payload.get("kind") == REEMBED_KIND


async def handle_reembed(runtime: Runtime, msg: Message) -> None:
    """Process one backfill message; raises only on cancellation (the message then reappears)."""
    queue, settings = runtime.queue, runtime.settings
    payload = msg.message if isinstance(msg.message, dict) else {}
    try:
        generation_id, first, last = int(payload["generation"]), int(payload["first"]), int(payload["last"])
    except (KeyError, TypeError, ValueError):
        logger.error("archiving malformed re-embed message %s: %r", msg.msg_id, msg.message)
        await queue.archive(msg.msg_id)
        return
    try:
        generation = await store.get_generation(runtime.pool, generation_id)
        if generation.state == "dropped":  # finalized (abandoned) meanwhile: nothing left to build
            await queue.delete(msg.msg_id)
            return
        if int(msg.read_ct) > settings.worker_max_deliveries:
            reason = f"chunks {first}-{last} given up after {int(msg.read_ct) - 1} deliveries"
            await store.set_error(runtime.pool, generation_id, reason)
            await queue.archive(msg.msg_id)
            return
        written = await _backfill(runtime, generation, first, last, msg.msg_id)
        await queue.delete(msg.msg_id)
        logger.info("re-embed %s: chunks %d-%d done (%d vectors)", generation.id, first, last, written)
    except NotFoundError:
        await queue.delete(msg.msg_id)
    except EmbeddingError as exc:
        await _failed(runtime, msg, generation_id, f"the embedding service failed: {exc}", exc.transient)
    except Exception as exc:
        if not is_transient_db_error(exc):
            logger.exception("re-embed message %s failed", msg.msg_id)
        await _failed(runtime, msg, generation_id, f"{exc.__class__.__name__}: {exc}", True)


async def _backfill(
    runtime: Runtime, generation: store.Generation, first: int, last: int, msg_id: int
) -> int:
    embedder = await embedder_for(runtime, generation)
    pool, batch = runtime.pool, max(1, runtime.settings.embedding_batch_size)
    vt = runtime.settings.worker_visibility_timeout_s
    written = 0
    while True:
        todo = await store.missing_chunks(pool, generation.id, first, last, batch)
        if not todo:
            return written
        vectors = await embedder.embed([text for _, text in todo])
        try:
            async with transaction(pool) as c:
                rows = await store.upsert_vectors(c, generation.id, [i for i, _ in todo], vectors)
                if rows is None:  # dropped meanwhile (`--finalize`): the message is deleted by the caller
                    return written
                written += rows
                # Still this worker's message: hidden for the next batch too.
                await runtime.queue.extend(msg_id, vt, conn=c)
        except asyncpg.ForeignKeyViolationError:
            continue  # a chunk was deleted between the read and the write: read the range again


async def _failed(runtime: Runtime, msg: Message, generation_id: int, reason: str, transient: bool) -> None:
    """Transient: redelivered after a backoff (the batches already written stay; the deliveries are
    bounded by RAG_WORKER_MAX_DELIVERIES). Otherwise the message is archived and the reason recorded on
    the generation (`reembed --status` shows it, `reembed` stops waiting and says it; running it again
    queues the missing chunks anew)."""
    logger.warning("re-embed message %s: %s", msg.msg_id, reason)
    try:
        if transient:
            delay = min(300.0, runtime.settings.worker_retry_backoff_s * 2 ** max(0, int(msg.read_ct) - 1))
            await runtime.queue.extend(msg.msg_id, int(delay))
        else:
            await store.set_error(runtime.pool, generation_id, reason)
            await runtime.queue.archive(msg.msg_id)
    except Exception as exc:  # the database is down: the message reappears when its timeout expires
        logger.warning("could not record the failure of re-embed message %s: %s", msg.msg_id, exc)


async def embed_for_generations(
    runtime: Runtime,
    chunks: Sequence[Chunk],
    batch_size: int,
    on_progress: Callable[[int], Awaitable[None]] | None = None,
    known: Mapping[int, np.ndarray] | None = None,
) -> tuple[np.ndarray | None, dict[int, np.ndarray]]:
    """A chunk writer's vectors: (generation 1's or None, {later generation: vectors}) for every live
    generation, the active one first (it reports progress). A building generation whose model fails
    is skipped: its backfill catches up with these chunks; the others' errors are the writer's.
    `known`: vectors the writer already has for some generations (an import reusing its source's),
    taken as they are instead of embedded."""
    base: np.ndarray | None = None
    extra: dict[int, np.ndarray] = {}
    for number, generation in enumerate(await store.live_generations(runtime.pool)):
        if known is not None and generation.id in known:
            vectors = known[generation.id]
        else:
            try:
                embedder = await embedder_for(runtime, generation)
                progress = on_progress if number == 0 else None
                vectors = await embed_chunks(embedder, chunks, batch_size, progress)
            except Exception as exc:
                if generation.state != "building":
                    raise
                logger.warning("skipping %s for this document (%s)", generation.describe(), exc)
                continue
        if generation.is_base:
            base = vectors
        else:
            extra[generation.id] = vectors
    return base, extra


async def write_for_generations(
    runtime: Runtime,
    chunks: Sequence[Chunk],
    batch_size: int,
    write: Callable[[np.ndarray | None, dict[int, np.ndarray]], Awaitable[T]],
    on_progress: Callable[[int], Awaitable[None]] | None = None,
    known: Mapping[int, np.ndarray] | None = None,
) -> T:
    """The one way a chunk writer writes: every live generation's vectors (embed_for_generations) handed
    to `write` (the chunks' transaction). When the generations changed in between (a switch, a new
    re-embed: write_chunks raises GenerationsChangedError under the generations lock), only the vectors
    still missing are embedded and the write is tried again."""
    have: dict[int, np.ndarray] = dict(known or {})
    for _ in range(3):
        base, later = await embed_for_generations(runtime, chunks, batch_size, on_progress, have)
        try:
            return await write(base, later)
        except store.GenerationsChangedError as exc:
            logger.info("%s; embedding the missing generations", exc)
            have.update(later)
            if base is not None:
                have[store.BASE_GENERATION] = base
    raise RuntimeError("the embedding generations kept changing while these chunks were written")

"""`rag-server reembed`: start (or resume) a re-embed, wait for the workers, switch, roll back, finalize.

Scope: the whole database. Every chunk of every collection gets a vector of the new generation before
the switch, and one transaction flips the searched generation for all of them; a per-collection switch
would need a generation per collection in every search (and a query embedded once per model).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rag_server.errors import ConflictError
from rag_server.generations import store
from rag_server.generations.active import embedder_for
from rag_server.generations.backfill import REEMBED_KIND, reembed_message
from rag_server.generations.store import BASE_GENERATION, Generation
from rag_server.infra.admin import quote_ident
from rag_server.infra.database import Executor, owner_connection, transaction
from rag_server.infra.runtime import Runtime

Report = Callable[[str], None]

# Chunks per backfill message: small enough that a lost message costs little, large enough that the
# queue holds few messages (1M chunks: 4k messages).
RANGE_CHUNKS = 256
# Generation 1's vectors are cleared by `--finalize` in batches of this many chunks (short transactions).
CLEAR_BATCH = 5000


@dataclass(frozen=True)
class ModelSpec:
    provider: str
    model: str
    dim: int
    base_url: str | None = None

    def matches(self, generation: Generation) -> bool:
        return (generation.provider, generation.model, generation.dim) == (
            self.provider,
            self.model,
            self.dim,
        )


def index_name(generation_id: int) -> str:
    return (
        "chunks_embedding_hnsw_idx"
        if generation_id == BASE_GENERATION
        else f"chunk_vectors_g{generation_id}_hnsw"
    )


async def ensure_index(runtime: Runtime, generation: Generation) -> None:
    """The generation's HNSW index: a partial expression index on chunk_vectors (the owner's DDL, built
    CONCURRENTLY: chunk writers are never blocked). An invalid one (a build interrupted) is rebuilt."""
    name, gid, dim = index_name(generation.id), int(generation.id), int(generation.dim)
    async with owner_connection(runtime.database_url) as owner:
        valid = await owner.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)", name
        )
        if valid:
            return
        if valid is False:
            await owner.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        await owner.execute(
            f"CREATE INDEX CONCURRENTLY {name} ON chunk_vectors"
            f" USING hnsw ((embedding::vector({dim})) vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
            f" WHERE generation_id = {gid}"
        )


async def pending_messages(conn: Executor, runtime: Runtime, generation_id: int) -> int:
    """Backfill messages of the generation still in the queue (visible or being processed)."""
    table = f"pgmq.{quote_ident('q_' + runtime.queue.name)}"
    count = await conn.fetchval(
        f"SELECT count(*) FROM {table} WHERE message->>'kind' = $1 AND message->>'generation' = $2",
        REEMBED_KIND,
        str(generation_id),
    )
    return int(count)


async def enqueue_missing(runtime: Runtime, generation: Generation, range_chunks: int = RANGE_CHUNKS) -> int:
    """One message per range of chunks still missing the generation, in ONE transaction; none while
    messages of the generation are queued (a second `reembed` resumes, never doubles the work)."""
    async with transaction(runtime.pool) as c:
        await c.execute("SELECT pg_advisory_xact_lock($1, $2)", store.GENERATIONS_LOCK >> 32, generation.id)
        if await pending_messages(c, runtime, generation.id):
            return 0
        ranges = await store.id_ranges(c, generation.id, range_chunks)
        for first, last in ranges:
            await runtime.queue.send(reembed_message(generation.id, first, last), conn=c)
        if ranges:
            await store.set_error(c, generation.id, None)
    return len(ranges)


async def probe(runtime: Runtime, generation: Generation) -> None:
    """Embed one text with the new model now: a wrong URL, model or dimension is said here, not by
    every worker later."""
    embedder = await embedder_for(runtime, generation)
    await embedder.embed(["rag-server reembed: probe"])


async def start(
    runtime: Runtime, spec: ModelSpec, report: Report, range_chunks: int = RANGE_CHUNKS
) -> Generation:
    """Create the generation (or resume the building one of this model) and queue its backfill."""
    generations = await store.list_generations(runtime.pool)
    current = next(
        (g for g in generations if g.state in ("building", "active", "retired") and spec.matches(g)), None
    )
    if current is not None and current.state == "active":
        raise ConflictError(f"{current.describe()} is already searched")
    if current is not None and current.state == "retired":
        raise ConflictError(
            f"{current.describe()} is kept from a switch: `reembed --rollback` searches it again"
        )
    if current is None:
        generation = await store.create_generation(
            runtime.pool, spec.provider, spec.model, spec.dim, spec.base_url
        )
        report(f"created {generation.describe()}")
        try:
            await probe(runtime, generation)
        except Exception:
            await store.mark_dropped(runtime.pool, ["building"])
            raise
    else:
        generation = current
        report(f"resuming {generation.describe()}")
    await ensure_index(runtime, generation)
    queued = await enqueue_missing(runtime, generation, range_chunks)
    if queued:
        report(f"queued {queued} re-embed message(s) for the workers")
    return generation


async def wait_until_built(
    runtime: Runtime, generation: Generation, report: Report, poll_s: float = 1.0
) -> None:
    """Until every chunk has a vector of the generation; chunks the backfill could not see (written
    by a writer that did not know the generation yet) are queued again once the queue is empty."""
    last = ""
    while True:
        done, total = await store.progress(runtime.pool, generation.id)
        line = f"re-embedded {done}/{total} chunks"
        if line != last:
            report(line)
            last = line
        if done >= total:
            return
        current = await store.get_generation(runtime.pool, generation.id)
        if current.state != "building":
            raise ConflictError(f"{current.describe()} is no longer building")
        if not await pending_messages(runtime.pool, runtime, generation.id):
            if current.error:  # its messages were given up: say why instead of queueing them forever
                raise ConflictError(f"the re-embed stopped: {current.error}. Run the command again to resume")
            await enqueue_missing(runtime, generation)  # chunks written by writers that did not know it
        await asyncio.sleep(poll_s)


async def switch(runtime: Runtime, generation: Generation, report: Report) -> None:
    """Flip the searched generation in ONE transaction (refused while a chunk lacks a vector). Running
    servers and workers follow within generations.active.ACTIVE_TTL_S."""
    while True:
        await wait_until_built(runtime, generation, report)
        try:
            old = await store.swap_active(runtime.pool, generation.id, "building")
        except ConflictError as exc:
            if "vectors for" not in str(exc):
                raise
            continue  # chunks written since the count: wait for their vectors too
        report(f"switched: searching {generation.describe().replace('building', 'active')}")
        report(f"kept {old.describe().replace('active', 'retired')} (`--rollback` / `--finalize`)")
        return


async def rollback(runtime: Runtime, report: Report) -> None:
    """Search the retired generation again (the current one becomes retired): ONE transaction."""
    retired = [g for g in await store.list_generations(runtime.pool) if g.state == "retired"]
    if not retired:
        raise ConflictError("no retired embedding generation to roll back to")
    old = await store.swap_active(runtime.pool, retired[0].id, "retired")
    report(f"rolled back: searching {retired[0].describe().replace('retired', 'active')}")
    report(f"kept {old.describe().replace('active', 'retired')}")


async def finalize(runtime: Runtime, report: Report) -> None:
    """Drop the retired generation (or abandon the building one): writers stop writing it at once,
    then its index and vectors go."""
    dropped = await store.mark_dropped(runtime.pool, ["retired", "building"])
    async with owner_connection(runtime.database_url) as owner:
        await owner.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {index_name(dropped.id)}")
        if dropped.is_base:
            await _clear_base_vectors(owner)
        else:
            while (
                await owner.execute(
                    "DELETE FROM chunk_vectors WHERE ctid = ANY (ARRAY(SELECT ctid FROM chunk_vectors"
                    " WHERE generation_id = $1 LIMIT $2))",
                    dropped.id,
                    CLEAR_BATCH,
                )
                != "DELETE 0"
            ):
                pass
    report(f"dropped {dropped.describe().replace(dropped.state, 'dropped')}: its index and vectors are gone")


async def _clear_base_vectors(owner: Any) -> None:
    """chunks.embedding := NULL in short batches (the BM25 triggers skip rows whose text is unchanged)."""
    while True:
        status = await owner.execute(
            "UPDATE chunks SET embedding = NULL WHERE id IN"
            " (SELECT id FROM chunks WHERE embedding IS NOT NULL LIMIT $1)",
            CLEAR_BATCH,
        )
        if status == "UPDATE 0":
            return


async def status(runtime: Runtime) -> list[dict[str, Any]]:
    """Every generation with its progress (chunks with a vector / all) and queued backfill messages."""
    rows = []
    for g in await store.list_generations(runtime.pool):
        done, total = (0, 0) if g.state == "dropped" else await store.progress(runtime.pool, g.id)
        rows.append(
            {
                "id": g.id,
                "provider": g.provider,
                "model": g.model,
                "dim": g.dim,
                "state": g.state,
                "vectors": done,
                "chunks": total,
                "queued_messages": await pending_messages(runtime.pool, runtime, g.id),
                "error": g.error,
            }
        )
    return rows


async def run_reembed(
    runtime: Runtime,
    spec: ModelSpec,
    report: Report,
    *,
    wait: bool = True,
    do_switch: bool = True,
    evaluate: Callable[[Generation], Awaitable[None]] | None = None,
) -> Generation:
    generation = await start(runtime, spec, report)
    if not wait:
        return generation
    await wait_until_built(runtime, generation, report)
    if evaluate is not None:
        await evaluate(generation)
    if do_switch:
        await switch(runtime, generation, report)
    else:
        report("built; not switched (run the same command without --no-switch to switch)")
    return generation

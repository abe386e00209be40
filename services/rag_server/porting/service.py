"""The import commands on an open Runtime: pick the collection, decide about vectors, run the source."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from uuid import UUID

import asyncpg

from rag_server.generations.store import live_generations
from rag_server.infra.database import plain_url, runtime_url
from rag_server.infra.runtime import Runtime
from rag_server.porting.chroma import ChromaSource
from rag_server.porting.importer import Source, import_source
from rag_server.porting.jsonl import export_collection, import_jsonl
from rag_server.porting.models import ImportCounts, PortingError, generation_plan
from rag_server.porting.pgvector_tables import open_pgvector_source
from rag_server.porting.store import (
    collection_exists,
    count_not_ready,
    delete_unused_collection,
    ensure_collection,
    hold_import_lock,
    release_import_lock,
)
from rag_server.porting.vector_check import checked_plan

Report = Callable[[str], None]
UNUSABLE_SHOWN = 20


async def _run(
    runtime: Runtime,
    source: Source,
    source_model: str | None,
    source_dim: int | None,
    collection: str,
    *,
    group_by: str | None,
    quiet: bool,
    report: Report,
    take_over: bool = False,
) -> ImportCounts:
    async with _target(runtime, collection, report) as collection_id:
        live = await live_generations(runtime.pool)
        plan = await checked_plan(runtime, source, generation_plan(source_model, source_dim, live), live)
        report(plan.reason)
        counts = await import_source(
            runtime, source, collection_id, plan, group_by=group_by, quiet=quiet, take_over=take_over
        )
        _report_counts(counts, collection, report)
        if not counts.stored and not counts.unusable:
            # An empty source (a wrong --chroma-collection, a store nothing was added to) is no success
            # either: `_target` takes away the collection it created.
            raise PortingError("nothing was imported: the source holds no records")
    return counts


@asynccontextmanager
async def _target(runtime: Runtime, collection: str, report: Report) -> AsyncIterator[UUID]:
    """The collection imported into, created when missing, its import lock held shared to the end (on a
    connection of its own: IMPORT_LOCK_CLASS). An import that fails (or is interrupted) before any batch
    committed takes the collection it created away again, unless another import holds the lock (two
    imports started at once into a new collection share it: the other may be embedding its first batch)
    or documents are in it; one holding documents stays (the committed batches are kept, and the same
    command again writes the rest)."""
    lease = await asyncpg.connect(plain_url(runtime_url(runtime.database_url, runtime.settings)))
    try:
        collection_id, created = await _held_collection(runtime, lease, collection)
        if created:
            report(f"created collection {collection}")
        try:
            yield collection_id
        except BaseException as exc:
            if created:
                await _release(lease, collection_id)  # ours only: another import's keeps it
                outcome = await delete_unused_collection(runtime.pool, runtime.queue, collection_id)
                if outcome == "removed":
                    report(f"removed the collection {collection} this import created: nothing was written")
                    raise
                if outcome == "importing":
                    report(
                        f"kept the collection {collection} this import created: another import is writing "
                        "into it"
                    )
            if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):  # Ctrl-C: the CLI exits 130
                report(
                    f"interrupted: the documents written into {collection} are kept (a transaction per "
                    "batch); the same command again writes the rest"
                )
            raise
    finally:
        await _close(lease)


async def _held_collection(runtime: Runtime, lease: asyncpg.Connection, collection: str) -> tuple[UUID, bool]:
    """(id, created) of the collection, its import lock held on `lease`. One found gone once the lock is
    held (a failed import's cleanup deleted it after it was looked up) is looked up, or made, again."""
    while True:
        collection_id, created = await ensure_collection(runtime.pool, collection)
        await hold_import_lock(lease, collection_id)
        if await collection_exists(runtime.pool, collection_id):  # a statement after the lock: sees a delete
            return collection_id, created
        await release_import_lock(lease, collection_id)


async def _release(lease: asyncpg.Connection, collection_id: UUID) -> None:
    try:
        await release_import_lock(lease, collection_id)
    except Exception:  # a lost connection holds no lock
        lease.terminate()


async def _close(lease: asyncpg.Connection) -> None:
    """Closed now, its lock released (as recovery.WorkerLease closes its connection); else dropped."""
    try:
        async with asyncio.timeout(2.0):  # not wait_for: it can drop a cancel (3.11)
            await lease.close()
    except Exception:
        lease.terminate()


def _report_counts(counts: ImportCounts, collection: str, report: Report) -> None:
    """The summary and its skipped documents; a PortingError when every document was unusable (a cut
    file, a source of records without text): an import that wrote nothing is no success, and `_target`
    then takes away the collection it created."""
    report(f"imported into {collection}: {counts.summary()}")
    if counts.skipped_keys:
        shown = ", ".join(counts.skipped_keys[:10]) + (" ..." if len(counts.skipped_keys) > 10 else "")
        report(f"skipped, their text is already a document of {collection}: {shown}")
    # One line each (bounded): which documents of the source could not be stored, and why.
    for key, reason in counts.unusable[:UNUSABLE_SHOWN]:
        report(f"skipped {key}: {reason}")
    if len(counts.unusable) > UNUSABLE_SHOWN:
        report(f"... and {len(counts.unusable) - UNUSABLE_SHOWN} more skipped")
    if counts.unusable and not counts.stored:
        n = len(counts.unusable)
        what = "its one document was" if n == 1 else f"all {n} of its documents were"
        raise PortingError(f"nothing was imported: {what} unusable")


async def import_chroma(
    runtime: Runtime,
    path: Path,
    *,
    collection: str = "default",
    chroma_collection: str | None = None,
    embedding_model: str | None = None,
    group_by: str | None = None,
    quiet: bool = False,
    report: Report = print,
    take_over: bool = False,
) -> ImportCounts:
    """`take_over`: update the documents of the same keys another Chroma store's collection of this name
    imported into `collection` (else the import is refused before writing)."""
    source = ChromaSource(path, chroma_collection)
    report(f"Chroma collection {source.name}: {source.count()} records")
    model = embedding_model or source.model
    return await _run(
        runtime,
        source,
        model,
        source.dim,
        collection,
        group_by=group_by,
        quiet=quiet,
        report=report,
        take_over=take_over,
    )


async def import_pgvector(
    runtime: Runtime,
    url: str,
    table: str,
    *,
    collection: str = "default",
    source_collection: str | None = None,
    embedding_model: str | None = None,
    group_by: str | None = None,
    quiet: bool = False,
    report: Report = print,
) -> ImportCounts:
    async with open_pgvector_source(url, table, source_collection) as source:
        report(f"{source.kind} table {table}")
        return await _run(
            runtime,
            source,
            embedding_model,
            source.dim,
            collection,
            group_by=group_by,
            quiet=quiet,
            report=report,
        )


async def import_jsonl_file(
    runtime: Runtime, path: Path, *, collection: str = "default", quiet: bool = False, report: Report = print
) -> ImportCounts:
    async with _target(runtime, collection, report) as collection_id:
        counts = await import_jsonl(runtime, path, collection_id, quiet=quiet, report=report)
        _report_counts(counts, collection, report)
        if not counts.stored and not counts.unusable:  # the header alone (a cut copy), as `_run` does
            raise PortingError("nothing was imported: the file holds no documents")
    return counts


async def export_jsonl(
    runtime: Runtime,
    collection: str,
    path: Path,
    *,
    with_vectors: bool = False,
    quiet: bool = False,
    report: Report = print,
) -> tuple[int, int]:
    from rag_server.collections.store import get_collection

    found = await get_collection(runtime.pool, collection)
    documents, chunks = await export_collection(
        runtime, found.id, found.name, path, with_vectors=with_vectors, quiet=quiet
    )
    report(f"exported {documents} documents ({chunks} chunks) of {found.name} to {path}")
    # An export holds ready documents' chunks: say what it left out (it was silent: "everything" lost
    # the documents still queued and those that failed).
    left = await count_not_ready(runtime.pool, found.id)
    if left:
        counts = ", ".join(f"{n} {status}" for status, n in left.items())
        total = sum(left.values())
        report(
            f"left out {total} document{'s' if total > 1 else ''} not ready ({counts}): an export holds "
            f"ready documents only; `rag-server tasks list --collection {found.name}` shows their tasks"
        )
    return documents, chunks

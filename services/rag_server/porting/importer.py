"""Run a vector-store source through grouping and the shared writer, a batch of records at a time."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any, Protocol
from uuid import UUID

from rag_server.evaluation.progress import progress_bar
from rag_server.infra.runtime import Runtime
from rag_server.porting.cleaning import printable
from rag_server.porting.grouping import GroupPlan, build_document, has_text
from rag_server.porting.models import (
    ImportCounts,
    ImportDocument,
    SourceRecord,
    VectorPlan,
    other_stores_error,
)
from rag_server.porting.store import claim_documents, imported_elsewhere
from rag_server.porting.writer import document_id, merge, write_documents

# Records fetched, embedded and written per transaction: bounded memory, a few seconds of work each.
BATCH_RECORDS = 256


class Source(Protocol):
    # Part of every imported document's id (with the collection and the document key).
    origin: str
    # The store itself (a Chroma collection's id), recorded on its documents: two stores of one origin
    # (two Chroma directories' `langchain` collections) make the same ids. None: not known.
    identity: str | None

    def scan(self) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """(record id, metadata) of every record, in the source's order: the grouping pass."""
        ...

    async def fetch(self, ids: Sequence[str]) -> list[SourceRecord]:
        """Full records (text, metadata, vector) for these ids, in any order."""
        ...


async def import_source(
    runtime: Runtime,
    source: Source,
    collection_id: UUID,
    vectors: VectorPlan,
    *,
    group_by: str | None = None,
    quiet: bool = False,
    batch_records: int | None = None,
    take_over: bool = False,
) -> ImportCounts:
    """`take_over`: update documents another store of the same origin imported (else refused, 0029)."""
    limit = batch_records or BATCH_RECORDS
    plan = GroupPlan()
    async for record_id, metadata in source.scan():
        plan.add(record_id, metadata, group_by)
    if source.identity is not None:
        doc_ids = [document_id(collection_id, source.origin, key) for key, _ in plan.groups()]
        if take_over:
            # All of them, the ones it leaves unchanged too: else its next run is refused for those.
            await claim_documents(runtime.pool, doc_ids, source.identity, taking_over=True)
        else:
            await _refuse_other_stores(runtime, source, doc_ids)
    total = ImportCounts()
    bar = progress_bar("import", plan.records, quiet=quiet)
    batch: list[tuple[str, list[str]]] = []
    size = 0

    async def flush() -> None:
        nonlocal batch, size
        records = {r.id: r for r in await source.fetch([i for _, ids in batch for i in ids])}
        docs: list[ImportDocument] = []
        for key, ids in batch:
            group = [records[i] for i in ids if i in records]
            doc = build_document(key, group)
            if doc is None:
                records_ = "its record" if len(group) == 1 else f"any of its {len(group)} records"
                total.unusable.append((printable(key), f"no text in {records_}"))
            else:
                total.records_without_text += sum(not has_text(r) for r in group)
                docs.append(doc)
        merge(
            total,
            await write_documents(
                runtime,
                collection_id,
                source.origin,
                docs,
                reuse_for=vectors.generation_id,
                source=source.identity,
                take_over=take_over,
            ),
        )
        bar.update(size)
        batch, size = [], 0

    try:
        for key, ids in plan.groups():
            batch.append((key, ids))
            size += len(ids)
            if size >= limit:
                await flush()
        if batch:
            await flush()
    finally:
        bar.close()
    return total


async def _refuse_other_stores(runtime: Runtime, source: Source, ids: list[UUID]) -> None:
    """A PortingError, before anything is written, when documents this import would update (`ids`) came
    from another store: the same keys of another Chroma directory's collection of the same name."""
    assert source.identity is not None
    if elsewhere := await imported_elsewhere(runtime.pool, ids, source.identity):
        raise other_stores_error(elsewhere, len(ids))

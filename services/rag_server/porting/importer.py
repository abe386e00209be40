"""Run a vector-store source through grouping and the shared writer, a batch of records at a time."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any, Protocol
from uuid import UUID

from rag_server.evaluation.progress import progress_bar
from rag_server.infra.runtime import Runtime
from rag_server.porting.cleaning import printable
from rag_server.porting.grouping import GroupPlan, build_document, has_text
from rag_server.porting.models import ImportCounts, ImportDocument, SourceRecord, VectorPlan
from rag_server.porting.writer import merge, write_documents

# Records fetched, embedded and written per transaction: bounded memory, a few seconds of work each.
BATCH_RECORDS = 256


class Source(Protocol):
    # Part of every imported document's id (with the collection and the document key).
    origin: str

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
) -> ImportCounts:
    limit = batch_records or BATCH_RECORDS
    plan = GroupPlan()
    async for record_id, metadata in source.scan():
        plan.add(record_id, metadata, group_by)
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
                runtime, collection_id, source.origin, docs, reuse_for=vectors.generation_id
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

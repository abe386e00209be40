"""The shared write path of every import: input cleaned as uploads are (porting/cleaning.py),
deterministic ids, unchanged documents skipped before any embedding (by the source's fingerprint:
users' own changes stay), stored vectors reused or computed here, then ONE transaction per batch
(documents, bytes, chunks through write_chunks, chunk metadata; the BM25 statistics follow in the chunk
triggers)."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

import asyncpg
import numpy as np

from rag_server.collections.locks import share_collection
from rag_server.generations.active import embedder_for
from rag_server.generations.backfill import write_for_generations
from rag_server.generations.store import Generation, live_generations
from rag_server.infra.database import transaction, vector_array
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.chunking import Chunk
from rag_server.ingestion.chunks import write_chunks
from rag_server.porting.cleaning import UnusableDocument, clean_document, printable
from rag_server.porting.models import ImportCounts, ImportDocument, PortingError, other_stores_error
from rag_server.porting.store import (
    ImportedFile,
    StoredDocument,
    claim_documents,
    documents_in_collection,
    imported_elsewhere,
    lock_documents,
    record_fingerprints,
    set_chunk_metadata,
    stored_documents,
    upsert_document,
)

logger = logging.getLogger(__name__)


def document_id(collection_id: UUID, origin: str, key: str) -> UUID:
    """The same source document imported into the same collection always gets the same id: running an
    import again updates or skips it instead of adding a copy."""
    return uuid.uuid5(collection_id, f"{origin}\x1f{key}")


def document_content(doc: ImportDocument) -> bytes:
    """The stored 'original' of an imported document: its chunk texts (the source kept no file)."""
    return "\n\n".join(c.text for c in doc.chunks).encode("utf-8")


def fingerprint(doc: ImportDocument) -> str:
    """sha256 of what the source gave for the document (key, name, type, metadata, each chunk's texts,
    metadata and place; not the vectors: the same text is the same chunk). Stored on the document
    (`documents.import_fingerprint`, migration 0018): a re-run compares the source with what the source
    gave last time, never with the document as users have changed it since."""
    canonical = {
        "key": doc.key,
        "filename": doc.filename,
        "file_type": doc.file_type,
        "metadata": doc.metadata,
        "chunks": [
            {
                "text": c.text,
                "search_text": c.search_text,
                "metadata": c.metadata,
                "page": c.page,
                "char_start": c.char_start,
                "char_end": c.char_end,
                "heading_path": c.heading_path,
                "location": c.location,
            }
            for c in doc.chunks
        ],
    }
    text = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


Decision = Literal["write", "unchanged", "record", "kept"]

# Why an exported document found in its own collection as an upload is not written over.
KEPT_UPLOAD = (
    "kept as it is: this collection holds it as an uploaded file, which an import never overwrites "
    "(its file would become the export's chunk text); import into another collection to compare"
)


@dataclass(frozen=True)
class _Prepared:
    id: UUID
    doc: ImportDocument
    content: bytes
    sha256: str
    # None: the document of an export imported back into its own collection (found by its exported
    # id): compared with what it holds now, and its own source's fingerprint (if any) left as it is.
    fingerprint: str | None

    def decide(self, stored: StoredDocument | None) -> Decision:
        """'write' (create, or update as a new version), 'unchanged', 'record' (unchanged, imported
        before migration 0018: its fingerprint is recorded now) or 'kept' (an exported upload that
        differs: its original file is not replaced by chunk text)."""
        if self.fingerprint is None:  # found by its exported id, so it exists in the collection
            if stored is not None and self._holds(stored, texts=True):
                return "unchanged"
            return "write" if stored is not None and stored.import_fingerprint is not None else "kept"
        if stored is None or stored.status != "ready":
            return "write"
        if stored.import_fingerprint is not None:
            return "unchanged" if stored.import_fingerprint == self.fingerprint else "write"
        # Imported before the fingerprints: the old comparison with the document as it is, once.
        return "record" if self._holds(stored, texts=False) else "write"

    def store(self, source: str | None) -> str | None:
        """The store recorded on the document (0029): its export line's (JSONL), else the import's
        `source`; None: left as it is (a document found by its exported id is the same document)."""
        if self.fingerprint is None:
            return None
        return self.doc.import_source if self.doc.import_source is not None else source

    def _holds(self, stored: StoredDocument, *, texts: bool) -> bool:
        """Whether the document holds what the source gives: chunk texts (or, for an imported one, the
        bytes made of them), chunk metadata and document metadata."""
        same_text = (
            stored.chunk_texts == [c.text for c in self.doc.chunks] if texts else stored.sha256 == self.sha256
        )
        return (
            same_text
            and stored.metadata == self.doc.metadata
            and stored.chunk_metadata == [c.metadata for c in self.doc.chunks]
        )


def _as_vector(value: object, dim: int) -> np.ndarray | None:
    """The source's vector when it is one of this generation's (`dim` finite numbers), else None: the
    chunk is embedded here (a NaN would be refused by pgvector and fail the whole batch)."""
    if value is None:
        return None
    try:
        array = vector_array(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return array if array.shape == (dim,) and bool(np.isfinite(array).all()) else None


def _chunks(p: _Prepared) -> list[Chunk]:
    return [
        Chunk(
            index=i,
            text=c.text,
            search_text=c.search_text,
            page=c.page,
            char_start=c.char_start,
            char_end=c.char_end,
            heading_path=c.heading_path,
            location=c.location,
        )
        for i, c in enumerate(p.doc.chunks)
    ]


async def _reused(
    runtime: Runtime, todo: Sequence[_Prepared], generation: Generation, counts: ImportCounts
) -> np.ndarray:
    """Every chunk's source vector for `generation` (its model made them), in order; a chunk without a
    usable one is embedded with that generation's model, all of them in one call."""
    flat = [_as_vector(c.embedding, generation.dim) for p in todo for c in p.doc.chunks]
    missing = [i for i, v in enumerate(flat) if v is None]
    if missing:
        texts = [c.search_text for p in todo for c in p.doc.chunks]
        embedder = await embedder_for(runtime, generation)
        for i, vector in zip(missing, await embedder.embed([texts[i] for i in missing]), strict=True):
            flat[i] = vector
        if generation.state == "active":
            counts.embedded += len(missing)
    return np.stack([v for v in flat if v is not None]).astype(np.float32)


def _per_document(
    todo: Sequence[_Prepared], base: np.ndarray | None, later: dict[int, np.ndarray]
) -> list[tuple[np.ndarray | None, dict[int, np.ndarray]]]:
    """The batch's vectors cut per document: (generation 1's or None, later generations' by id)."""
    out: list[tuple[np.ndarray | None, dict[int, np.ndarray]]] = []
    start = 0
    for p in todo:
        end = start + len(p.doc.chunks)
        out.append((None if base is None else base[start:end], {g: v[start:end] for g, v in later.items()}))
        start = end
    return out


# What PostgreSQL refuses in a value that cleaning could not foresee (asyncpg reports an argument it
# cannot encode as DataError too; a record too large for to_tsvector, the BM25 triggers' tokenizer, is
# over a program limit): the batch is written again a document at a time, so only that one is skipped.
# Not constraint violations: cleaned input cannot cause one, a collection deleted meanwhile can.
_BAD_VALUE = (asyncpg.DataError, asyncpg.ProgramLimitExceededError)


async def write_documents(
    runtime: Runtime,
    collection_id: UUID,
    origin: str,
    docs: Sequence[ImportDocument],
    *,
    reuse_for: int | None,
    source: str | None = None,
    take_over: bool = False,
) -> ImportCounts:
    """Write one batch of documents into the collection; returns what happened to them.
    `reuse_for`: the embedding generation the source's stored vectors are reused for (None: none are).
    `source`: the store the documents come from, recorded on each (0029; None: a source without one) that
    names none of its own (`ImportDocument.import_source`: an export line's);
    a document another store wrote is refused (PortingError, the batch rolled back) unless `take_over`.
    Vectors are written for every live generation; when the generations change between embedding and
    the write (a switch, a new re-embed), the batch is embedded again, like the worker does.
    A document that cannot be stored is skipped alone with its reason (`ImportCounts.unusable`)."""
    counts = ImportCounts()
    cleaned: list[ImportDocument] = []
    for doc in docs:
        try:
            cleaned.append(clean_document(doc))
        except UnusableDocument as exc:
            counts.unusable.append((printable(doc.key), str(exc)))
    try:
        merge(
            counts,
            await _write_batch(runtime, collection_id, origin, cleaned, reuse_for, source, take_over),
        )
    except _BAD_VALUE as exc:
        if len(cleaned) == 1:
            counts.unusable.append((printable(cleaned[0].key), _first_line(exc)))
        else:  # the batch's transaction rolled back whole: each document alone, in its own
            for doc in cleaned:
                alone = await write_documents(
                    runtime,
                    collection_id,
                    origin,
                    [doc],
                    reuse_for=reuse_for,
                    source=source,
                    take_over=take_over,
                )
                merge(counts, alone)
    return counts


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {printable(text[0]) if text else ''}"


async def _write_batch(
    runtime: Runtime,
    collection_id: UUID,
    origin: str,
    docs: Sequence[ImportDocument],
    reuse_for: int | None,
    source: str | None,
    take_over: bool,
) -> ImportCounts:
    # An export imported back into its own collection: its documents are still there, by their ids.
    wanted = [d.exported_id for d in docs if d.exported_id is not None]
    present = await documents_in_collection(runtime.pool, collection_id, wanted) if wanted else set()
    by_id: dict[UUID, _Prepared] = {}
    for doc in docs:
        if not doc.chunks:
            continue
        content = document_content(doc)
        sha = hashlib.sha256(content).hexdigest()
        if doc.exported_id is not None and doc.exported_id in present:
            by_id[doc.exported_id] = _Prepared(doc.exported_id, doc, content, sha, None)
        else:
            doc_id = document_id(collection_id, origin, doc.key)
            by_id[doc_id] = _Prepared(doc_id, doc, content, sha, fingerprint(doc))
    # Sorted: concurrent imports lock documents in the same order and cannot deadlock.
    prepared = [by_id[k] for k in sorted(by_id)]
    stored = await stored_documents(
        runtime.pool, [p.id for p in prepared], [p.id for p in prepared if p.fingerprint is None]
    )
    decided = [(p, p.decide(stored.get(p.id))) for p in prepared]
    todo = [p for p, decision in decided if decision == "write"]
    record = {p.id: p.fingerprint for p, decision in decided if decision == "record" and p.fingerprint}
    if record:
        await record_fingerprints(runtime.pool, record)
    # Those left as they are with no store (imported before 0029, or copied from an export before its
    # lines held one) are their store's from now on.
    left: dict[str, list[UUID]] = {}
    for p, decision in decided:
        if decision != "write" and (store := p.store(source)) is not None:
            left.setdefault(store, []).append(p.id)
    for store, ids in left.items():
        await claim_documents(runtime.pool, ids, store)
    kept = [printable(p.doc.key) for p, decision in decided if decision == "kept"]
    counts = ImportCounts(unchanged=len(prepared) - len(todo) - len(kept))
    counts.unusable += [(key, KEPT_UPLOAD) for key in kept]
    if not todo:
        return counts
    # The source's vectors for `reuse_for` (while it is live); every other live generation is embedded.
    live = {g.id: g for g in await live_generations(runtime.pool)}
    known: dict[int, np.ndarray] = {}
    if reuse_for is not None and reuse_for in live:
        known[reuse_for] = await _reused(runtime, todo, live[reuse_for], counts)
    chunks = [chunk for p in todo for chunk in _chunks(p)]
    if not any(live[g].state == "active" for g in known):
        counts.embedded += len(chunks)

    async def write(base: np.ndarray | None, later: dict[int, np.ndarray]) -> ImportCounts:
        written = ImportCounts()  # fresh per attempt: a write rolled back counts nothing
        guard = None if source is None or take_over else source
        await _write(runtime, collection_id, todo, _per_document(todo, base, later), written, source, guard)
        return written

    batch = max(1, runtime.settings.embedding_batch_size)
    merge(counts, await write_for_generations(runtime, chunks, batch, write, known=known))
    return counts


async def _write(
    runtime: Runtime,
    collection_id: UUID,
    todo: Sequence[_Prepared],
    vectors: Sequence[tuple[np.ndarray | None, dict[int, np.ndarray]]],
    counts: ImportCounts,
    source: str | None,
    refuse_other_than: str | None,
) -> None:
    """ONE transaction: documents, bytes, chunks with their vectors, chunk metadata. A document that
    exists is updated as a new version (version + 1, replaced_at), like a replacement: chat answers
    citing its old chunks show them as from an earlier version. `refuse_other_than`: a store; a document
    of the batch another store wrote rolls it back (PortingError)."""
    async with transaction(runtime.pool) as c:
        if not await share_collection(c, collection_id):  # deleted meanwhile (a delete waits for this)
            raise PortingError(
                "the collection was deleted while this import ran: the documents it wrote went with it"
            )
        # Every existing document of the batch locked first, in id order (todo is sorted): the chunk
        # writes below take the generations lock and bm25_stats, which must come after every document
        # row (CLAUDE.md's lock order), else a worker finishing one of them could deadlock with us.
        await lock_documents(c, [p.id for p in todo])
        # Every document row written before any chunk: a chunk write takes bm25_stats (at its end,
        # migration 0026) and keeps it to commit, and an upsert may wait for another transaction holding
        # the same (collection, sha256) (a replacement's swap), which may be waiting for bm25_stats.
        outcomes = [
            await upsert_document(
                c,
                p.id,
                collection_id,
                ImportedFile(p.doc.filename, p.doc.file_type, p.content, p.sha256, p.doc.metadata),
                p.fingerprint,
                p.store(source),
                only_from=refuse_other_than if p.fingerprint is not None else None,
            )
            for p in todo
        ]
        if refuse_other_than is not None and "elsewhere" in outcomes:
            # The import's check before its first write, made again under the rows' locks, failed.
            taken = [p.id for p, outcome in zip(todo, outcomes, strict=True) if outcome == "elsewhere"]
            elsewhere = await imported_elsewhere(c, taken, refuse_other_than)
            raise other_stores_error(elsewhere, len(todo), meanwhile=True)  # the batch rolls back
        for p, (base, later), outcome in zip(todo, vectors, outcomes, strict=True):
            if outcome == "duplicate":
                counts.duplicates += 1
                counts.skipped_keys.append(printable(p.doc.key))
                continue
            await write_chunks(c, p.id, _chunks(p), base, later)
            await set_chunk_metadata(c, p.id, [c_.metadata for c_ in p.doc.chunks])
            counts.chunks += len(p.doc.chunks)
            if outcome == "created":
                counts.created += 1
            else:
                counts.updated += 1


def merge(total: ImportCounts, part: ImportCounts) -> None:
    total.created += part.created
    total.updated += part.updated
    total.unchanged += part.unchanged
    total.duplicates += part.duplicates
    total.chunks += part.chunks
    total.embedded += part.embedded
    total.skipped_keys.extend(part.skipped_keys)
    total.unusable.extend(part.unusable)
    total.records_without_text += part.records_without_text

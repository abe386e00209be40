"""The shared write path of every import: deterministic ids, unchanged documents skipped before any
embedding, stored vectors reused or computed here, then ONE transaction per batch (documents, bytes,
chunks through write_chunks, chunk metadata; the BM25 statistics follow in the chunk triggers)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import numpy as np

from rag_server.infra.database import transaction
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.chunking import Chunk
from rag_server.ingestion.chunks import write_chunks
from rag_server.porting.models import ImportCounts, ImportDocument
from rag_server.porting.store import StoredDocument, set_chunk_metadata, stored_documents, upsert_document


def document_id(collection_id: UUID, origin: str, key: str) -> UUID:
    """The same source document imported into the same collection always gets the same id: running an
    import again updates or skips it instead of adding a copy."""
    return uuid.uuid5(collection_id, f"{origin}\x1f{key}")


def document_content(doc: ImportDocument) -> bytes:
    """The stored 'original' of an imported document: its chunk texts (the source kept no file)."""
    return "\n\n".join(c.text for c in doc.chunks).encode("utf-8")


@dataclass(frozen=True)
class _Prepared:
    id: UUID
    doc: ImportDocument
    content: bytes
    sha256: str

    def unchanged(self, stored: StoredDocument | None) -> bool:
        return (
            stored is not None
            and stored.status == "ready"
            and stored.sha256 == self.sha256
            and stored.metadata == self.doc.metadata
            and stored.chunk_metadata == [c.metadata for c in self.doc.chunks]
        )


def _as_vector(value: object, dim: int) -> np.ndarray | None:
    if value is None:
        return None
    to_numpy = getattr(value, "to_numpy", None)  # pgvector's codec: a Vector object or an ndarray
    array = np.asarray(to_numpy() if to_numpy is not None else value, dtype=np.float32).reshape(-1)
    return array if array.shape == (dim,) else None


async def _vectors(
    runtime: Runtime, todo: Sequence[_Prepared], reuse: bool, counts: ImportCounts
) -> list[np.ndarray]:
    """Per document, its chunks' vectors: the stored ones when reusable, the rest embedded in one call."""
    dim = runtime.settings.embedding_dim
    per_doc: list[list[np.ndarray | None]] = [
        [_as_vector(c.embedding, dim) if reuse else None for c in p.doc.chunks] for p in todo
    ]
    missing = [(i, j) for i, vs in enumerate(per_doc) for j, v in enumerate(vs) if v is None]
    if missing:
        computed = await runtime.embedder.embed([todo[i].doc.chunks[j].search_text for i, j in missing])
        for (i, j), vector in zip(missing, computed, strict=True):
            per_doc[i][j] = vector
        counts.embedded += len(missing)
    return [np.stack([v for v in vs if v is not None]).astype(np.float32) for vs in per_doc]


async def write_documents(
    runtime: Runtime, collection_id: UUID, origin: str, docs: Sequence[ImportDocument], *, reuse: bool
) -> ImportCounts:
    """Write one batch of documents into the collection; returns what happened to them."""
    counts = ImportCounts()
    by_id: dict[UUID, _Prepared] = {}
    for doc in docs:
        if not doc.chunks:
            continue
        content = document_content(doc)
        doc_id = document_id(collection_id, origin, doc.key)
        by_id[doc_id] = _Prepared(doc_id, doc, content, hashlib.sha256(content).hexdigest())
    # Sorted: concurrent imports lock documents in the same order and cannot deadlock.
    prepared = [by_id[k] for k in sorted(by_id)]
    stored = await stored_documents(runtime.pool, [p.id for p in prepared])
    todo = [p for p in prepared if not p.unchanged(stored.get(p.id))]
    counts.unchanged = len(prepared) - len(todo)
    if not todo:
        return counts
    vectors = await _vectors(runtime, todo, reuse, counts)
    async with transaction(runtime.pool) as c:
        for p, doc_vectors in zip(todo, vectors, strict=True):
            outcome = await upsert_document(
                c, p.id, collection_id, p.doc.filename, p.content, p.sha256, p.doc.metadata
            )
            if outcome == "duplicate":
                counts.duplicates += 1
                counts.skipped_keys.append(p.doc.key)
                continue
            chunks = [
                Chunk(
                    index=i,
                    text=c_.text,
                    search_text=c_.search_text,
                    page=c_.page,
                    char_start=c_.char_start,
                    char_end=c_.char_end,
                )
                for i, c_ in enumerate(p.doc.chunks)
            ]
            await write_chunks(c, p.id, chunks, doc_vectors)
            await set_chunk_metadata(c, p.id, [c_.metadata for c_ in p.doc.chunks])
            counts.chunks += len(chunks)
            if outcome == "created":
                counts.created += 1
            else:
                counts.updated += 1
    return counts


def merge(total: ImportCounts, part: ImportCounts) -> None:
    total.created += part.created
    total.updated += part.updated
    total.unchanged += part.unchanged
    total.duplicates += part.duplicates
    total.chunks += part.chunks
    total.embedded += part.embedded
    total.skipped_keys.extend(part.skipped_keys)

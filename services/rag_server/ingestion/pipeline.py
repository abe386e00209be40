"""parse -> chunk -> embed -> write: the one code path used by the worker and by direct ingestion."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import numpy as np

from rag_server.collections.models import DEFAULT_COLLECTION_ID
from rag_server.config import Settings
from rag_server.infra.embeddings import Embedder
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.chunking import Chunk
from rag_server.ingestion.chunks import write_chunks
from rag_server.ingestion.documents import IncomingFile, insert_document, mark_document_failed
from rag_server.ingestion.parsing import ParseError, file_type_for, sanitize_filename
from rag_server.ingestion.preparation import prepare_chunks_sync


class UnsupportedFileError(ValueError):
    """The filename's extension is not a supported type."""


async def prepare_chunks(
    settings: Settings, filename: str, content: bytes, file_type: str, title: str | None = None
) -> list[Chunk]:
    return await asyncio.to_thread(prepare_chunks_sync, settings, filename, content, file_type, title)


def title_from_metadata(metadata: object) -> str | None:
    if isinstance(metadata, dict):
        title = metadata.get("title")
        if isinstance(title, str) and title.strip():
            return title
    return None


async def embed_chunks(
    embedder: Embedder,
    chunks: Sequence[Chunk],
    batch_size: int,
    on_progress: Callable[[int], Awaitable[None]] | None = None,
) -> np.ndarray:
    """Embed search_text in batches; `on_progress(done)` is awaited after each batch."""
    parts: list[np.ndarray] = []
    done = 0
    for start in range(0, len(chunks), batch_size):
        batch = [c.search_text for c in chunks[start : start + batch_size]]
        parts.append(await embedder.embed(batch))
        done += len(batch)
        if on_progress is not None:
            await on_progress(done)
    if not parts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    return np.concatenate(parts)


# --- direct ingestion (evaluation, benchmarks) --------------------------------------------------


@dataclass(frozen=True)
class DirectDocument:
    filename: str
    content: bytes
    metadata: dict[str, Any]


def incoming_file(filename: str, content: bytes, metadata: dict[str, Any] | None = None) -> IncomingFile:
    """Validate a filename's type and wrap the bytes for storage. Raises UnsupportedFileError."""
    name = sanitize_filename(filename)
    file_type = file_type_for(name)
    if file_type is None:
        raise UnsupportedFileError(f"{name}: unsupported file type")
    return IncomingFile(name, file_type.name, file_type.content_type, content, dict(metadata or {}))


# Embed across documents in windows of about this many chunks: big batches for throughput,
# bounded memory for large corpora.
DIRECT_WINDOW_CHUNKS = 2048


async def ingest_documents_direct(
    runtime: Runtime,
    documents: Sequence[DirectDocument],
    *,
    progress: Callable[[int], None] | None = None,
    collection_id: UUID = DEFAULT_COLLECTION_ID,
) -> list[UUID]:
    """Store documents and their chunks (status ready) without the queue, through the worker's own
    parse/chunk/embed/write code, embedding in large batches across documents. Returns ids in input order
    (an existing sha256 within `collection_id` returns the existing id); progress(n) gets the number of
    documents finished. An unparsable document is stored 'failed' with its reason; an unsupported
    extension raises UnsupportedFileError before anything is stored."""
    files = [incoming_file(d.filename, d.content, d.metadata) for d in documents]
    settings = runtime.settings
    ids: list[UUID] = []
    finished = 0
    window: list[tuple[UUID, list[Chunk]]] = []
    window_chunks = 0

    def advance(n: int) -> None:
        nonlocal finished
        finished += n
        if progress is not None:
            progress(finished)

    async def flush() -> None:
        nonlocal window, window_chunks
        await _write_window(runtime, window)
        advance(len(window))
        window, window_chunks = [], 0

    for f in files:
        doc_id, status = await insert_document(runtime.pool, f, collection_id)
        ids.append(doc_id)
        if status == "ready" or any(doc_id == d for d, _ in window):
            advance(1)
            continue
        try:
            chunks = await prepare_chunks(
                settings, f.filename, f.content, f.file_type, title_from_metadata(f.metadata)
            )
        except ParseError as exc:
            await mark_document_failed(runtime.pool, doc_id, str(exc))
            advance(1)
            continue
        window.append((doc_id, chunks))
        window_chunks += len(chunks)
        if window_chunks >= DIRECT_WINDOW_CHUNKS:
            await flush()
    if window:
        await flush()
    return ids


async def _write_window(runtime: Runtime, window: Sequence[tuple[UUID, list[Chunk]]]) -> None:
    """Embed a window of documents' chunks in large batches (every live embedding generation, like the
    worker) and write each document's chunks."""
    # Imported here: rag_server.generations imports this module.
    from rag_server.generations.backfill import write_for_generations

    async def write(base: np.ndarray | None, later: dict[int, np.ndarray]) -> None:
        offset = 0
        for doc_id, chunks in window:
            end = offset + len(chunks)
            await write_chunks(
                runtime.pool,
                doc_id,
                chunks,
                None if base is None else base[offset:end],
                {generation: vectors[offset:end] for generation, vectors in later.items()},
            )
            offset = end

    all_chunks = [c for _, chunks in window for c in chunks]
    await write_for_generations(runtime, all_chunks, max(runtime.settings.embedding_batch_size, 256), write)

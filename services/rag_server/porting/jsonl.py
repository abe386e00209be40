"""`rag-server export` and `import jsonl`: a collection as JSON Lines, and back.

Format (version 1), UTF-8, one JSON object per line:
  line 1, the header: {"format": "rag-server-export", "version": 1, "collection": NAME,
      "embedding_model": MODEL, "embedding_dim": DIM, "vectors": BOOL, "exported_at": ISO-8601}
  then one line per ready document, its chunks inside, in order:
      {"type": "document", "id": UUID, "filename": ..., "file_type": ..., "content_type": ...,
       "metadata": {...}, "created_at": ISO-8601, "import_source": STORE|null,
       "chunks": [{"index": 0, "text": ..., "search_text": ..., "page": N|null, "char_start": N|null,
                   "char_end": N|null, "heading_path": ...|null, "location": {...}|null,
                   "metadata": {...}, "embedding": [floats] (only with --with-vectors)}]}
A document is one line so an importer holds one document at a time; the original file bytes are not
exported (an imported document stores its chunk texts as text). Readers skip unknown keys, and only
"id", "filename" and each chunk's "index" and "text" are required: `content_type`, `heading_path`,
`location` and `import_source` were added later without a new version, since every older reader skips
them and every older file imports without them.

Importing keeps each document's file name and file type (a CSV stays `people.csv` of type `csv`) and
each chunk's page, heading path and location. Its stored bytes are the chunk texts, so its
`content_type` is text/plain (what the download serves, saved as `people.csv.txt`), whatever the
source's was. Into the collection that was exported, a document still there under its exported id is
that document (skipped when it holds the same texts and metadata, else updated as a new version); into
another collection each document gets an id derived from its exported one (a copy, the same one on
every re-run).

`import_source` is the store an imported document came from (migration 0029: `chroma:<collection id>`;
null for an uploaded document, or one imported before 0029). A copy records the same store, the one its
text came from (a JSONL file is no store of its own: a copy of a copy still names it); an import of the
file fills it on a copy imported before exports held it. A line without it (an older export) leaves the
document's as it is. A document found by its exported id keeps its own: an export imported back into
its own collection is the same documents, which a re-run of their Chroma import still syncs as its own.
A copy in another collection has ids of that collection (a Chroma import into it would meet the copies
as duplicates of the same text): there the store says where the text came from.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from uuid import UUID

import asyncpg
import numpy as np

from rag_server.evaluation.progress import progress_bar
from rag_server.generations.store import active_generation, live_generations
from rag_server.infra.database import vector_array
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.parsing import FILE_TYPES, file_type_for, sanitize_filename
from rag_server.paths import input_file_problem, output_file_problem, written_file
from rag_server.porting.cleaning import UnusableDocument
from rag_server.porting.models import (
    ImportChunk,
    ImportCounts,
    ImportDocument,
    PortingError,
    VectorPlan,
    generation_plan,
)
from rag_server.porting.store import count_ready, export_rows
from rag_server.porting.writer import merge, write_documents

FORMAT = "rag-server-export"
VERSION = 1
BATCH_CHUNKS = 256
KNOWN_TYPES = frozenset(t.name for t in FILE_TYPES.values())

# What an import of a JSONL file reads, in the messages that name it.
EXPORT_FILE = "a file written by `rag-server export`"


def _vector_list(value: Any) -> list[float]:
    return [float(x) for x in vector_array(value)]


def _chunk_json(row: asyncpg.Record, with_vectors: bool) -> dict[str, Any]:
    chunk = {
        "index": row["chunk_index"],
        "text": row["text"],
        "search_text": row["search_text"],
        "page": row["page"],
        "char_start": row["char_start"],
        "char_end": row["char_end"],
        "heading_path": row["heading_path"],
        "location": None if row["location"] is None else dict(row["location"]),
        "metadata": dict(row["metadata"] or {}),
    }
    if with_vectors:
        # None only when the generation was dropped (`reembed --finalize`) during the export.
        chunk["embedding"] = None if row["embedding"] is None else _vector_list(row["embedding"])
    return chunk


async def _documents(
    rows: AsyncIterator[asyncpg.Record], with_vectors: bool
) -> AsyncIterator[dict[str, Any]]:
    """Consecutive chunk rows of one document -> one document object (rows come ordered by document)."""
    current: dict[str, Any] | None = None
    async for row in rows:
        if current is None or current["id"] != str(row["document_id"]):
            if current is not None:
                yield current
            current = {
                "type": "document",
                "id": str(row["document_id"]),
                "filename": row["filename"],
                "file_type": row["file_type"],
                "content_type": row["content_type"],
                "metadata": dict(row["document_metadata"] or {}),
                "created_at": row["created_at"].isoformat(),
                "import_source": row["import_source"],
                "chunks": [],
            }
        current["chunks"].append(_chunk_json(row, with_vectors))
    if current is not None:
        yield current


async def export_collection(
    runtime: Runtime, collection_id: UUID, name: str, path: Path, *, with_vectors: bool, quiet: bool = False
) -> tuple[int, int]:
    """Write the collection's ready documents to `path` (atomically: a temporary file renamed at the end).
    Returns (documents, chunks) written."""
    if problem := await asyncio.to_thread(output_file_problem, path):
        raise PortingError(problem)
    # The searched generation's model names the vectors (exported with --with-vectors: its own).
    generation = await active_generation(runtime.pool)
    _, total_chunks = await count_ready(runtime.pool, collection_id)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "collection": name,
        "embedding_model": generation.model,
        "embedding_dim": generation.dim,
        "vectors": with_vectors,
        "exported_at": datetime.now(UTC).isoformat(),
    }
    target = written_file(path)  # a link is written through: the rename replaces its target
    tmp = target.with_name(target.name + ".partial")
    documents = chunks = 0
    bar = progress_bar("export", total_chunks, quiet=quiet)
    try:
        with tmp.open("w", encoding="utf-8") as out:
            out.write(json.dumps(header) + "\n")
            rows = export_rows(
                runtime.pool, collection_id, with_vectors=with_vectors, generation_id=generation.id
            )
            async for doc in _documents(rows, with_vectors):
                out.write(json.dumps(doc, ensure_ascii=False) + "\n")
                documents += 1
                chunks += len(doc["chunks"])
                bar.update(len(doc["chunks"]))
        os.replace(tmp, target)
    finally:
        bar.close()
        tmp.unlink(missing_ok=True)
    return documents, chunks


def _read_header(f: IO[str], path: Path) -> dict[str, Any]:
    try:
        header = json.loads(f.readline() or "null")
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise PortingError(f"{path} is not a rag-server export (its first line is not the export header)")
    if header.get("version") != VERSION:
        raise PortingError(f"{path} is export format version {header.get('version')}; this reads {VERSION}")
    return header


def _embedding(value: Any) -> np.ndarray | None:
    """A chunk's vector as given; anything that is not a list of numbers is none (embedded here, as
    is a vector the writer finds non-finite or of another dimension)."""
    if value is None:
        return None
    try:
        return np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        return None


def _required_text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"a chunk's text is {type(value).__name__}, not a string")
    return value


def _optional(value: Any, kind: type) -> Any:
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def _file_type(given: Any, filename: str) -> str:
    """The document's type in the exporting server: kept when it is one this server knows (for
    display and type filters), else the file name's, else txt."""
    if isinstance(given, str) and given in KNOWN_TYPES:
        return given
    by_name = file_type_for(filename)
    return by_name.name if by_name else "txt"


def _exported_id(value: Any) -> UUID | None:
    try:
        return UUID(str(value))
    except ValueError:
        return None


def _document(line: str) -> ImportDocument:
    """A document line; UnusableDocument (a sentence) when it is not one."""
    try:  # the file is read with surrogateescape: bytes that are not UTF-8 are this line's alone
        line.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnusableDocument(
            f"not a document line (its bytes are not UTF-8 at character {exc.start})"
        ) from None
    try:
        obj = json.loads(line)
        filename = sanitize_filename(str(obj["filename"]))
        chunks = [
            ImportChunk(
                text=_required_text(c["text"]),
                search_text=str(c.get("search_text") or c["text"]),
                metadata=c.get("metadata") or {},
                embedding=_embedding(c.get("embedding")),
                page=_optional(c.get("page"), int),
                char_start=_optional(c.get("char_start"), int),
                char_end=_optional(c.get("char_end"), int),
                heading_path=_optional(c.get("heading_path"), str),
                location=_optional(c.get("location"), dict),
            )
            for c in sorted(obj["chunks"], key=lambda c: int(c["index"]))
        ]
        doc = ImportDocument(
            key=str(obj["id"]),
            filename=filename,
            metadata=obj.get("metadata") or {},
            chunks=chunks,
            file_type=_file_type(obj.get("file_type"), filename),
            exported_id=_exported_id(obj["id"]),
            import_source=_optional(obj.get("import_source"), str),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UnusableDocument(f"not a document line ({exc.__class__.__name__}: {exc})") from None
    if not doc.chunks:  # it was dropped without a word, counted nowhere
        raise UnusableDocument(f"{doc.key}: no chunks, nothing to store")
    return doc


def _lines(f: IO[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(f, start=2):
        if line.strip():
            yield number, line


async def import_jsonl(
    runtime: Runtime, path: Path, collection_id: UUID, *, quiet: bool = False, report: Any = print
) -> ImportCounts:
    if problem := await asyncio.to_thread(input_file_problem, path, EXPORT_FILE):
        raise PortingError(problem)
    try:
        file_size = (await asyncio.to_thread(path.stat)).st_size
    except OSError as exc:
        raise PortingError(f"{path}: {exc.strerror or exc}") from None
    live = await live_generations(runtime.pool)
    total = ImportCounts()
    with path.open(encoding="utf-8", errors="surrogateescape") as f:
        header = _read_header(f, path)
        if header.get("vectors"):
            plan = generation_plan(header.get("embedding_model"), header.get("embedding_dim"), live)
        else:
            active = next(g for g in live if g.state == "active")
            plan = VectorPlan(
                False,
                f"re-embedding with {active.model}: the file holds no vectors (exported without"
                " --with-vectors)",
            )
        report(plan.reason)
        bar = progress_bar("import", file_size, quiet=quiet, unit="B")
        batch: list[ImportDocument] = []
        size = 0
        try:
            for number, line in _lines(f):
                bar.update(len(line.encode("utf-8", "surrogateescape")))
                try:
                    batch.append(_document(line))
                except UnusableDocument as exc:  # this line alone; the file goes on
                    total.unusable.append((f"line {number}", str(exc)))
                    continue
                size += len(batch[-1].chunks)
                if size >= BATCH_CHUNKS:
                    merge(
                        total,
                        await write_documents(
                            runtime, collection_id, "jsonl", batch, reuse_for=plan.generation_id
                        ),
                    )
                    batch, size = [], 0
            if batch:
                merge(
                    total,
                    await write_documents(
                        runtime, collection_id, "jsonl", batch, reuse_for=plan.generation_id
                    ),
                )
        finally:
            bar.close()
    return total

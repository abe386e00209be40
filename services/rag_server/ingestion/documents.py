"""Documents and their original bytes: store, list, read, select, duplicate check, direct ingestion
(deleting them: deletion.py)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from uuid import UUID

from rag_server.collections.models import DEFAULT_COLLECTION_ID
from rag_server.errors import NotFoundError
from rag_server.infra.database import Executor, connection, transaction
from rag_server.ingestion.models import (
    Document,
    DocumentDetail,
    DocumentList,
    DocumentSelection,
    DocumentSort,
    DocumentStatus,
    DuplicateCheckResult,
    DuplicateResult,
    FileDigest,
    NamedDocument,
)
from rag_server.ingestion.parsing import FILE_TYPES, file_type_for, sanitize_filename
from rag_server.retrieval.filters import normalise_file_type
from rag_server.retrieval.metadata_match import metadata_clauses
from rag_server.retrieval.models import MetadataMatch, TextMatch
from rag_server.retrieval.text_match import document_clause


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@dataclass(frozen=True)
class IncomingFile:
    filename: str  # already sanitised
    file_type: str
    content_type: str
    content: bytes
    # None: the request gave none (a new document gets {}, a replacement keeps the document's); {} was
    # given and clears it. The two must stay apart: only an absent field keeps the old metadata.
    metadata: dict[str, Any] | None

    @cached_property  # read several times per upload (dedup, replacement, the task row)
    def sha256(self) -> str:
        return sha256_hex(self.content)


@dataclass(frozen=True)
class DocumentFile:
    filename: str  # the name to save it under: download_name()
    content_type: str
    content: bytes


async def insert_new_document(
    conn: Executor, f: IncomingFile, sha: str, status: str, collection_id: UUID
) -> UUID | None:
    """Insert the document and its bytes (one transaction); None if this sha256 is already stored in
    this collection (dedup is per collection).

    ON CONFLICT waits for a concurrent insert of the same bytes to commit: one document wins. Two
    statements, not one: the bytes' row-level security check looks for the document row, which a
    statement cannot see when the same statement inserts it.
    """
    async with transaction(conn) as c:
        doc_id: UUID | None = await c.fetchval(
            """
            INSERT INTO documents (filename, file_type, content_type, size_bytes, sha256, metadata, status,
                                   collection_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (collection_id, sha256) DO NOTHING RETURNING id
            """,
            f.filename,
            f.file_type,
            f.content_type,
            len(f.content),
            sha,
            f.metadata if f.metadata is not None else {},
            status,
            collection_id,
        )
        if doc_id is not None:
            await c.execute(
                "INSERT INTO document_files (document_id, content) VALUES ($1, $2)", doc_id, f.content
            )
    return doc_id


async def check_duplicates(
    conn: Executor, files: Sequence[FileDigest], collection_id: UUID = DEFAULT_COLLECTION_ID
) -> DuplicateCheckResult:
    """Which of these files are already stored in the collection (by sha256), so a client can skip
    re-uploading them."""
    rows = await conn.fetch(
        "SELECT sha256, id, filename, status FROM documents"
        " WHERE collection_id = $2 AND sha256 = ANY($1::text[])",
        [f.sha256.lower() for f in files],
        collection_id,
    )
    existing = {r["sha256"]: r for r in rows}
    # In a thread: 10,000 deep paths are seconds of work, and every other request of the server waited.
    names = await asyncio.to_thread(lambda: {f.filename: sanitize_filename(f.filename) for f in files})
    # A name's last part too: a document stored before names kept their folders (0013, 0020) has only that.
    bare = {name: name.rpartition("/")[2] for name in names.values() if "/" in name}
    named: dict[str, list[NamedDocument]] = {}
    named_before: dict[str, list[NamedDocument]] = {}
    for r in await conn.fetch(
        "SELECT filename, sha256, id, status, named_before_paths FROM documents"
        " WHERE collection_id = $2 AND filename = ANY($1::text[]) ORDER BY created_at, id",
        sorted(set(names.values()) | set(bare.values())),
        collection_id,
    ):
        document = NamedDocument(id=r["id"], status=r["status"])
        named.setdefault(r["filename"], []).append(document)
        if r["named_before_paths"]:
            named_before.setdefault(r["filename"], []).append(document)
    results = []
    for f in files:
        sha = f.sha256.lower()
        hit = existing.get(sha)
        name = names[f.filename]
        results.append(
            DuplicateResult(
                filename=f.filename,
                sha256=sha,
                # Only a ready document: a failed one is worth uploading again (the upload re-queues
                # it), and a copy of one still queued or processing is sent so that its batch follows
                # that document (and says so if it fails: ingestion/batches.py).
                duplicate=hit is not None and hit["status"] == "ready",
                document_id=hit["id"] if hit else None,
                existing_filename=hit["filename"] if hit else None,
                status=hit["status"] if hit else None,
                same_name=[d for d in named.get(name, []) if hit is None or d.id != hit["id"]],
                bare_name=[]
                if name in named or name not in bare
                else [d for d in named_before.get(bare[name], []) if hit is None or d.id != hit["id"]],
            )
        )
    return DuplicateCheckResult(results=results)


_SORT_SQL = {
    "name": "name_key",  # natural order, accents folded (migrations 0022, 0033: rag_name_key)
    "uploaded": "created_at",
    "chunks": "chunk_count",
    "size": "size_bytes",
    "type": "file_type",
    "status": "status",
}
# The name, folded as the name order folds it and lowered, is kept (migration 0034); the part looked for
# is folded once (a subquery: under a generic plan, a function of a parameter is called for every row).
_NAME_HOLDS_PART = "strpos(name_folded, (SELECT lower(rag_fold_accents($4)))) > 0"
_DOC_COLUMNS = """id, collection_id, filename, file_type, content_type, size_bytes, sha256, status, error,
                  chunk_count, metadata, version, replaced_at, created_at, updated_at"""


async def list_documents(
    conn: Executor,
    *,
    limit: int = 50,
    offset: int = 0,
    sort: DocumentSort = "uploaded",
    descending: bool = True,
    status: DocumentStatus | None = None,
    file_type: str | None = None,
    collection_ids: Sequence[UUID] | None = None,
    name: str | None = None,
    metadata: MetadataMatch | None = None,
    text: TextMatch | None = None,
) -> DocumentList:
    """Documents in `collection_ids` (None: every collection), filtered, sorted and paged. `name`: only
    those whose name contains it, ignoring case and Latin accents as the name order does ("ecole" finds
    "École.pdf"; taken literally: `%` and `_` are no wildcards).
    `metadata`: only those whose metadata matches, as a search filter's (retrieval/filters.py); `text`:
    only those whose chunks match it (retrieval/text_match.py)."""
    if file_type is not None:
        # The search filter's spelling rules ("TXT", ".txt" mean txt): a listing and a search given the
        # same type must agree on which documents have it.
        file_type = normalise_file_type(file_type)
    params: list[Any] = [status, file_type, None if collection_ids is None else list(collection_ids), name]

    where = " AND ".join(
        [
            "($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR file_type = $2)",
            "($3::uuid[] IS NULL OR collection_id = ANY($3::uuid[]))",
            f"($4::text IS NULL OR {_NAME_HOLDS_PART})",
            *metadata_clauses("metadata", metadata or {}, params),
            *_text_clauses(text, params),
        ]
    )
    direction = "DESC" if descending else "ASC"
    order = f"{_SORT_SQL[sort]} {direction}, id"  # from a fixed map, not input
    page = f"LIMIT ${len(params) + 1} OFFSET ${len(params) + 2}"
    if text:
        # The text is looked for in every chunk of every document of the collection: looked for once,
        # the count and the page read from what matched (two statements read the chunks twice: 0.47 s
        # instead of 0.12 s at 15,000 documents of 3 chunks). One statement: they agree, too.
        rows = await conn.fetch(
            _LISTING_ONCE_SQL.format(key=_SORT_SQL[sort], where=where, direction=direction, page=page),
            *params,
            limit,
            offset,
        )
        items = [Document.model_validate({k: r[k] for k in _DOC_FIELDS}) for r in rows if r["id"] is not None]
        return DocumentList(items=items, total=int(rows[0]["total"]), limit=limit, offset=offset)
    async with connection(conn) as c:
        total = await c.fetchval(f"SELECT count(*) FROM documents WHERE {where}", *params)
        rows = await c.fetch(
            f"SELECT {_DOC_COLUMNS} FROM documents WHERE {where} ORDER BY {order} {page}",
            *params,
            limit,
            offset,
        )
    items = [Document.model_validate(dict(r)) for r in rows]
    return DocumentList(items=items, total=int(total), limit=limit, offset=offset)


_DOC_FIELDS = [name.strip() for name in _DOC_COLUMNS.split(",")]
# list_documents in one statement: the matching documents' ids and sort keys once, then their count and
# one page of them (a row of NULLs beside the count when the page is empty).
_LISTING_ONCE_SQL = f"""
WITH matching AS MATERIALIZED (SELECT id, {{key}} AS sort_key FROM documents WHERE {{where}}),
     shown AS (SELECT id, sort_key FROM matching ORDER BY sort_key {{direction}}, id {{page}})
SELECT counted.total, d.*
FROM (SELECT count(*) AS total FROM matching) AS counted
LEFT JOIN LATERAL (
    SELECT {", ".join(f"documents.{name}" for name in _DOC_FIELDS)}, shown.sort_key
    FROM shown JOIN documents USING (id)
) AS d ON true
ORDER BY d.sort_key {{direction}}, d.id
"""


def _text_clauses(text: TextMatch | None, params: list[Any]) -> list[str]:
    return [document_clause(text, params, 1, "documents.id")] if text else []


async def get_document(conn: Executor, document_id: UUID) -> Document:
    row = await conn.fetchrow(f"SELECT {_DOC_COLUMNS} FROM documents WHERE id = $1", document_id)
    if row is None:
        raise NotFoundError(f"no document {document_id}")
    return Document.model_validate(dict(row))


async def get_document_detail(conn: Executor, document_id: UUID) -> DocumentDetail:
    """The document and its unfinished task, if any (one at a time per document), in one statement."""
    row = await conn.fetchrow(
        f"""
        SELECT {_DOC_COLUMNS},
               (SELECT to_jsonb(t) FROM (
                    SELECT id AS task_id, batch_id, status, total_chunks, completed_chunks, failures, error,
                           replaces_version, started_at
                    FROM job_tasks
                    WHERE document_id = $1 AND status IN ('queued', 'processing')
                    ORDER BY created_at DESC LIMIT 1) t) AS task
        FROM documents WHERE id = $1
        """,
        document_id,
    )
    if row is None:
        raise NotFoundError(f"no document {document_id}")
    return DocumentDetail.model_validate(dict(row))


async def get_document_file(conn: Executor, document_id: UUID) -> DocumentFile:
    """The stored bytes (an upload's original file; an import's chunk text) with the name to save them
    under and their content type."""
    row = await conn.fetchrow(
        """
        SELECT d.filename, d.content_type, f.content
        FROM documents d JOIN document_files f ON f.document_id = d.id WHERE d.id = $1
        """,
        document_id,
    )
    if row is None:
        raise NotFoundError(f"no document {document_id}")
    name = download_name(row["filename"], row["content_type"])
    return DocumentFile(name, row["content_type"], bytes(row["content"]))


def download_name(filename: str, content_type: str) -> str:
    """The name a download is saved under: the document's, unless its extension says another type than
    the bytes served. An imported document's stored file is its chunk text, served as text/plain
    (porting/store.py), while it keeps its source's name and type for display and filters: `people.csv`
    is downloaded as `people.csv.txt`, not as a CSV file it is not."""
    served = _media_type(content_type)
    named = file_type_for(filename)
    if named is None or _media_type(named.content_type) == served:
        return filename
    extension = next((e for e, t in FILE_TYPES.items() if _media_type(t.content_type) == served), None)
    return filename + extension if extension else filename


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


async def matching_documents(
    conn: Executor, collection_id: UUID, request: DocumentSelection
) -> list[Document]:
    """The documents of one collection that `request` names (ids, metadata, text), by name."""
    params: list[Any] = [collection_id, request.ids]
    where = _selection_where(request, params)
    rows = await conn.fetch(
        f"SELECT {_DOC_COLUMNS} FROM documents WHERE {where} ORDER BY filename, id", *params
    )
    return [Document.model_validate(dict(r)) for r in rows]


async def still_matching(
    conn: Executor, collection_id: UUID, request: DocumentSelection, among: Sequence[UUID]
) -> list[UUID]:
    """Those of `among` that `request` names now, in id order: the documents of a selection matched again
    once they are locked (ingestion/selection.py). `among` is what it matched before, so only its
    metadata and text are tested again (and that each is still in the collection)."""
    params: list[Any] = [collection_id, list(among)]
    where = _selection_where(request, params)
    rows = await conn.fetch(f"SELECT id FROM documents WHERE {where} ORDER BY id", *params)
    return [r["id"] for r in rows]


def _selection_where(request: DocumentSelection, params: list[Any]) -> str:
    """The WHERE of a selection: $1 the collection, $2 the ids (NULL: any); its other parameters appended."""
    return " AND ".join(
        [
            "collection_id = $1 AND ($2::uuid[] IS NULL OR id = ANY($2::uuid[]))",
            *metadata_clauses("metadata", request.metadata or {}, params),
            *_text_clauses(request.text, params),
        ]
    )


# --- direct ingestion (no queue: evaluation, benchmarks) ------------------------------------------


async def insert_document(
    conn: Executor, f: IncomingFile, collection_id: UUID = DEFAULT_COLLECTION_ID
) -> tuple[UUID, DocumentStatus]:
    """(id, status) of a new document stored as 'processing'; an existing sha256 in the collection returns
    the existing one."""
    sha = f.sha256
    async with transaction(conn) as c:
        doc_id = await insert_new_document(c, f, sha, "processing", collection_id)
        if doc_id is not None:
            return doc_id, "processing"
        row = await c.fetchrow(
            "SELECT id, status FROM documents WHERE collection_id = $1 AND sha256 = $2", collection_id, sha
        )
        assert row is not None
        return row["id"], row["status"]


async def mark_document_failed(conn: Executor, document_id: UUID, reason: str) -> None:
    await conn.execute(
        "UPDATE documents SET status = 'failed', error = $2, updated_at = now() WHERE id = $1",
        document_id,
        reason,
    )

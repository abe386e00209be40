"""Documents: list, details, chunks, original bytes, delete, and a duplicate check before uploading."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field

from rag_server.api.deps import (
    ChunkTextQuery,
    MetadataQuery,
    OffsetQuery,
    PoolDep,
    QueueDep,
    ReadPoolDep,
    SettingsDep,
    TextQuery,
    UploadBudgetDep,
    require,
)
from rag_server.api.downloads import attachment
from rag_server.api.errors import EITHER_422, error_responses
from rag_server.api.upload_routes import multipart_body
from rag_server.collections.models import DEFAULT_COLLECTION
from rag_server.collections.store import resolve_ids
from rag_server.ingestion import deletion, documents, metadata_edits
from rag_server.ingestion.batches import replace_document_file
from rag_server.ingestion.models import (
    DeletedDocuments,
    DeleteDocuments,
    Document,
    DocumentDetail,
    DocumentList,
    DocumentSort,
    DocumentStatus,
    DuplicateCheck,
    DuplicateCheckResult,
    MetadataForSelection,
    MetadataUpdate,
    MetadataUpdates,
    NamePart,
    UpdatedDocuments,
    UploadResponse,
)
from rag_server.ingestion.upload import (
    check_declared_size,
    read_replacement,
    read_replacement_form,
    spooled_bytes,
)
from rag_server.retrieval.models import DocumentChunks
from rag_server.retrieval.store import document_chunks_page
from rag_server.text import Cleaned

router = APIRouter(tags=["documents"], dependencies=[require("reader")], responses=error_responses(401))

CollectionQuery = Annotated[
    str, Query(min_length=1, max_length=100, description="Collection name or id"), Cleaned
]

FileTypeParam = Annotated[str, Field(max_length=20), Cleaned]

_FILE_BYTES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "The stored bytes: an upload's original file, with its content type; an imported document's "
            "chunk text as text/plain, saved under its name + '.txt' when the name says another type "
            "(people.csv.txt)"
        ),
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.get("/documents", response_model=DocumentList, responses=error_responses(404, 503))
async def list_documents(
    pool: ReadPoolDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: OffsetQuery = 0,
    sort: DocumentSort = "uploaded",
    order: Literal["asc", "desc"] = "desc",
    status: DocumentStatus | None = None,
    file_type: Annotated[FileTypeParam | None, Query(alias="type")] = None,
    collection: CollectionQuery = DEFAULT_COLLECTION,
    name: NamePart | None = None,
    metadata: MetadataQuery = None,
    text: TextQuery = None,
) -> DocumentList:
    """The documents of one collection (name or id, default `default`; unknown: 404); `name`: those whose
    name contains it, ignoring case and Latin accents; `metadata`: those whose metadata matches (as a
    search filter); `text`: those with a chunk matching it (Chroma's where_document). `sort=name` is
    natural order, as file managers give it ("a2" before "a10"; case and Latin accents ignored: "Émile"
    among the E's; equal names, as "file 7" and "file 007" or "école" and "ecole", by id); every sort
    breaks ties by id, so pages neither repeat nor skip a document."""
    return await documents.list_documents(
        pool,
        limit=limit,
        offset=offset,
        sort=sort,
        descending=order == "desc",
        status=status,
        file_type=file_type,
        collection_ids=await resolve_ids(pool, [collection]),
        name=name,
        metadata=metadata,
        text=text,
    )


@router.get("/documents/{document_id}", response_model=DocumentDetail, responses=error_responses(404, 503))
async def get_document(document_id: UUID, pool: ReadPoolDep) -> DocumentDetail:
    """The document, and while it (or a new version of it) is queued or processing, its task's progress."""
    return await documents.get_document_detail(pool, document_id)


@router.get(
    "/documents/{document_id}/chunks", response_model=DocumentChunks, responses=error_responses(404, 503)
)
async def document_chunks(
    document_id: UUID,
    pool: ReadPoolDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: OffsetQuery = 0,
    text: ChunkTextQuery = None,
) -> DocumentChunks:
    """The document's chunks in order (`chunk_index` from `offset`), as search and chat cite them; with
    `text`, only those whose own text matches it (Chroma's where_document), `offset` matches skipped."""
    doc = await documents.get_document(pool, document_id)
    total, items = await document_chunks_page(pool, document_id, doc.chunk_count, offset, limit, text)
    return DocumentChunks(document_id=document_id, total=total, offset=offset, limit=limit, items=items)


@router.get(
    "/documents/{document_id}/download",
    response_class=Response,
    responses={**_FILE_BYTES, **error_responses(404, 503)},
)
async def download_document(document_id: UUID, pool: ReadPoolDep) -> Response:
    f = await documents.get_document_file(pool, document_id)
    return Response(f.content, media_type=f.content_type, headers=attachment(f.filename))


@router.delete(
    "/documents/{document_id}",
    status_code=204,
    dependencies=[require("editor")],
    responses=error_responses(403, 404, 409, 503),
)
async def delete_document(document_id: UUID, pool: PoolDep) -> Response:
    """Deletes the document, its bytes and its chunks together; a task still running for it is failed.
    409: new tasks kept being queued for it while the delete waited (nothing deleted; try again)."""
    await deletion.delete_document(pool, document_id)
    return Response(status_code=204)


@router.post(
    "/documents/delete",
    response_model=DeletedDocuments,
    dependencies=[require("editor")],
    responses=error_responses(400, 403, 404, 409, 503),
)
async def delete_documents(body: DeleteDocuments, pool: PoolDep) -> DeletedDocuments:
    """Delete the documents of a collection that `ids`, `metadata`, `text` or several name (Chroma's
    delete(ids, where, where_document)), with their bytes and chunks, in one transaction; tasks still
    running for them are failed. The selection is matched again once its documents are locked: one
    changed meanwhile so that it no longer matches is not deleted. 409 (nothing deleted): `expected_count`
    was given and the documents about to be deleted are not that many (`code` `selection_changed`), or new
    tasks kept being queued for them while the delete waited (try again)."""
    (collection_id,) = await resolve_ids(pool, [body.collection])
    return await deletion.delete_matching(pool, collection_id, body)


@router.patch(
    "/documents/{document_id}",
    response_model=Document,
    dependencies=[require("editor")],
    responses={**error_responses(400, 403, 404, 409, 503), **EITHER_422},
)
async def update_document_metadata(document_id: UUID, body: MetadataUpdate, pool: PoolDep) -> Document:
    """Set the document's metadata: `mode` `replace` (default) stores `metadata` as it is; `merge` sets
    its top-level keys on the current metadata (null removes a key). Search filters see it at once.
    409: `expected_metadata` was given and the metadata is no longer that."""
    return await metadata_edits.update_metadata(pool, document_id, body)


@router.post(
    "/documents/metadata",
    response_model=UpdatedDocuments,
    dependencies=[require("editor")],
    responses={**error_responses(400, 403, 404, 503), **EITHER_422},
)
async def update_documents_metadata(body: MetadataUpdates, pool: PoolDep) -> UpdatedDocuments:
    """Set the metadata of several documents of a collection (Chroma's update(ids, metadatas)), each as
    PATCH /documents/{id} would, in one transaction: a value refused refuses the whole request."""
    (collection_id,) = await resolve_ids(pool, [body.collection])
    return await metadata_edits.update_many(pool, collection_id, body)


@router.post(
    "/documents/metadata/matching",
    response_model=UpdatedDocuments,
    dependencies=[require("editor")],
    responses={**error_responses(400, 403, 404, 409, 503), **EITHER_422},
)
async def update_matching_metadata(body: MetadataForSelection, pool: PoolDep) -> UpdatedDocuments:
    """Give `set` (`mode` `merge`, the default, or `replace`) to every document of the collection that
    `ids`, `metadata`, `text` or several name, as POST /documents/delete selects them, in one transaction:
    what the web app's "all matching" edits, matched again once the documents are locked (one changed
    meanwhile so that it no longer matches is left alone). `not_updated`: ids named that no longer match.
    409 (nothing written): `expected_count` was given and the documents about to be updated are not that
    many (`code` `selection_changed`), or one of them is being written (`document_busy`)."""
    (collection_id,) = await resolve_ids(pool, [body.collection])
    update = MetadataUpdate(metadata=body.set, mode=body.mode)
    return await metadata_edits.update_matching(pool, collection_id, body, update, body.expected_count)


# An upload: api/upload_routes.py gives its body the upload bound.
_FILE_BODY = multipart_body(
    {
        "type": "object",
        "properties": {
            "file": {"type": "string", "format": "binary"},
            "metadata": {
                "type": "string",
                "description": "A JSON object: the document's metadata once the new file is in "
                "(absent: it keeps its own).",
            },
        },
        "required": ["file"],
    }
)


@router.put(
    "/documents/{document_id}/file",
    status_code=202,
    response_model=UploadResponse,
    dependencies=[require("editor")],
    responses={**error_responses(400, 403, 404, 409, 413, 415, 503), **EITHER_422},
    openapi_extra=_FILE_BODY,
)
async def replace_file(
    document_id: UUID,
    request: Request,
    settings: SettingsDep,
    pool: PoolDep,
    queue: QueueDep,
    budget: UploadBudgetDep,
) -> UploadResponse:
    """Replace the document's file (multipart field `file`, one file): a batch of one task. The document
    keeps its id; once processed its version grows by one and its old chunks are gone, in one
    transaction (until then search finds the old version; if the new file fails, the old one stays).
    Identical bytes: a 'duplicate' task with a `detail`, nothing changes. 409: still being processed,
    these bytes are another document's of the collection, or the new file name is another document's
    (upload's `replace=true` would find two so named)."""
    check_declared_size(request.headers.get("content-length"), settings)
    form = await read_replacement_form(request)
    try:
        parts = form.getlist("file")
        async with budget.holding(spooled_bytes(parts)):  # in memory from here to the transaction's end
            incoming = await read_replacement(parts, form.getlist("metadata"), settings)
            return await replace_document_file(pool, queue, document_id, incoming)
    finally:
        await form.close()


@router.post(
    "/documents/check-duplicates",
    response_model=DuplicateCheckResult,
    responses=error_responses(400, 404, 503),
)
async def check_duplicates(body: DuplicateCheck, pool: PoolDep) -> DuplicateCheckResult:
    """Which of these files are already stored in the collection (by sha256) and ready, so a client can
    skip re-uploading them; a copy of a document still queued or processing is worth sending (its batch
    then follows that document, and says so if it fails)."""
    (collection_id,) = await resolve_ids(pool, [body.collection])
    return await documents.check_duplicates(pool, body.files, collection_id)

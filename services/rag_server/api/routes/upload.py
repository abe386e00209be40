"""POST /upload: validate every file (type 415, size 413) before storing anything, then one transaction."""

from __future__ import annotations

from fastapi import APIRouter, Request

from rag_server.api.deps import PoolDep, QueueDep, SettingsDep, UploadBudgetDep, require
from rag_server.api.errors import EITHER_422, error_responses
from rag_server.api.upload_routes import multipart_body
from rag_server.collections.store import resolve
from rag_server.ingestion.batches import create_upload_batch
from rag_server.ingestion.models import UploadResponse
from rag_server.ingestion.upload import (
    check_declared_size,
    read_collection_field,
    read_upload,
    read_upload_form,
    read_upload_options,
    spooled_bytes,
    with_metadata,
)

router = APIRouter(tags=["ingestion"], dependencies=[require("editor")], responses=error_responses(401, 403))

# An upload: api/upload_routes.py gives its body the upload bound.
_MULTIPART_BODY = multipart_body(
    {
        "type": "object",
        "properties": {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
            "collection": {
                "type": "string",
                "default": "default",
                "description": "The collection (name or id) the files go into.",
            },
            "metadata": {
                "type": "string",
                "description": "A JSON object given to every file of the upload, e.g. "
                '{"team": "x"} (string keys, at most 8 levels, at most 16 KiB as JSON). '
                "Search filters match it. A file already stored (a 'duplicate' task) keeps "
                "its own metadata: change it with PATCH /documents/{id}. The same bytes as a "
                "failed document queue it again under this upload's name, type and metadata.",
            },
            "file_metadata": {
                "type": "string",
                "description": "A JSON object of file name -> object, e.g. "
                '{"a.pdf": {"year": 2020}}: that file\'s own keys, on top of `metadata` '
                "(the file's value wins). A name that is no file of the upload: 422.",
            },
            "replace": {
                "type": "string",
                "enum": ["true", "false"],
                "default": "false",
                "description": "true: a file named like a document of the collection replaces "
                "that document's file (same id, version + 1 once processed; the old version "
                "stays searchable until then). Identical bytes: a 'duplicate' task, nothing "
                "changes. Without metadata, the document keeps its own.",
            },
        },
        "required": ["files"],
    }
)


@router.post(
    "/upload",
    status_code=202,
    response_model=UploadResponse,
    responses={**error_responses(400, 404, 409, 413, 415, 503), **EITHER_422},
    openapi_extra=_MULTIPART_BODY,
)
async def upload(
    request: Request, settings: SettingsDep, pool: PoolDep, queue: QueueDep, budget: UploadBudgetDep
) -> UploadResponse:
    """Upload one or many files (multipart field `files`) into a collection (field `collection`, default
    `default`; unknown: 404), with optional `metadata` / `file_metadata` (JSON objects) and `replace`.
    Returns the batch to poll, and `warnings` (a name given by several files). 409: `replace` names a
    document that is still being processed, or whose name several documents share. Every empty file and
    every file over the size limit is named in the refusal (413 when any is too large, else 422)."""
    check_declared_size(request.headers.get("content-length"), settings)
    form = await read_upload_form(request, settings)
    try:
        collection = read_collection_field(form.getlist("collection"))
        options = read_upload_options(
            form.getlist("metadata"), form.getlist("file_metadata"), form.getlist("replace")
        )
        # The collection before the files' bytes are read into memory (the form spooled them to disk):
        # an upload into one the key cannot reach is refused without holding them (QA: 392 MB each).
        (target,) = await resolve(pool, [collection])
        parts = form.getlist("files")
        async with budget.holding(spooled_bytes(parts)):  # in memory from here to the transaction's end
            files = with_metadata(await read_upload(parts, settings), options)
            return await create_upload_batch(pool, queue, files, target.id, replace=options.replace)
    finally:
        await form.close()

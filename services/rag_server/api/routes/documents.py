"""Documents: list, details, original bytes, delete, and a duplicate check before uploading."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote
from uuid import UUID

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from rag_server.api.deps import RuntimeDep
from rag_server.ingestion import store

router = APIRouter(tags=["documents"])


@router.get("/documents")
async def list_documents(
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    sort: Literal["name", "uploaded", "chunks"] = "uploaded",
    order: Literal["asc", "desc"] = "desc",
    status: Literal["queued", "processing", "ready", "failed"] | None = None,
    file_type: Annotated[str | None, Query(alias="type", max_length=20)] = None,
) -> dict[str, Any]:
    items, total = await store.list_documents(
        runtime.pool,
        limit=limit,
        offset=offset,
        sort=sort,
        descending=order == "desc",
        status=status,
        file_type=file_type,
    )
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/documents/{document_id}")
async def get_document(document_id: UUID, runtime: RuntimeDep) -> dict[str, Any]:
    return await store.get_document(runtime.pool, document_id)


@router.get("/documents/{document_id}/download")
async def download_document(document_id: UUID, runtime: RuntimeDep) -> Response:
    filename, content_type, content = await store.get_document_file(runtime.pool, document_id)
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "'").replace("?", "_")
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
    return Response(content, media_type=content_type, headers={"Content-Disposition": disposition})


@router.delete("/documents/{document_id}", status_code=204)
async def delete_document(document_id: UUID, runtime: RuntimeDep) -> Response:
    """Deletes the document, its bytes and its chunks together; a task still running for it is failed."""
    await store.delete_document(runtime.pool, document_id)
    return Response(status_code=204)


class FileDigest(BaseModel):
    filename: str = Field(max_length=1000)
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")


class DuplicateCheck(BaseModel):
    files: list[FileDigest] = Field(max_length=10_000)


@router.post("/documents/check-duplicates")
async def check_duplicates(body: DuplicateCheck, runtime: RuntimeDep) -> dict[str, Any]:
    """Which of these files are already stored (by sha256), so a client can skip re-uploading them."""
    existing = await store.check_duplicates(runtime.pool, [f.sha256 for f in body.files])
    results = []
    for f in body.files:
        hit = existing.get(f.sha256.lower())
        results.append(
            {
                "filename": f.filename,
                "sha256": f.sha256.lower(),
                # A failed document is worth uploading again: the upload re-queues it.
                "duplicate": hit is not None and hit["status"] != "failed",
                "document_id": hit["document_id"] if hit else None,
                "existing_filename": hit["filename"] if hit else None,
                "status": hit["status"] if hit else None,
            }
        )
    return {"results": results}

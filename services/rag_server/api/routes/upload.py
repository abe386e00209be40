"""POST /upload: validate every file (type 415, size 413) before storing anything, then one transaction."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel
from starlette.datastructures import UploadFile

from rag_server.api.deps import RuntimeDep
from rag_server.ingestion import store
from rag_server.ingestion.parsing import SUPPORTED_EXTENSIONS, file_type_for, sanitize_filename

router = APIRouter(tags=["ingestion"])

READ_CHUNK = 1024 * 1024


class UploadedTask(BaseModel):
    task_id: UUID
    filename: str
    status: str
    document_id: UUID | None


class UploadResponse(BaseModel):
    batch_id: UUID
    tasks: list[UploadedTask]


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


@router.post(
    "/upload",
    status_code=202,
    response_model=UploadResponse,
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                        },
                        "required": ["files"],
                    }
                }
            }
        }
    },
)
async def upload(request: Request, runtime: RuntimeDep) -> dict[str, Any]:
    """Upload one or many files (multipart field `files`). Returns the batch to poll."""
    settings = runtime.settings
    max_files = settings.max_files_per_upload
    # Refused before reading a byte of the body.
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.max_upload_request_bytes:
        raise HTTPException(
            413,
            f"The upload is {_mb(int(declared))}, over the limit of {_mb(settings.max_upload_request_bytes)} "
            "per request; send the files in several uploads.",
        )
    # The multipart parser spools file parts beyond 1 MB to disk, so memory stays bounded.
    form = await request.form(max_files=max_files + 1, max_fields=max_files + 10)
    try:
        parts = [p for p in form.getlist("files") if isinstance(p, UploadFile)]
        if not parts:
            raise HTTPException(422, "Send at least one file in the multipart field 'files'.")
        if len(parts) > max_files:
            raise HTTPException(413, f"Too many files in one upload: {len(parts)} (limit {max_files}).")

        names = [sanitize_filename(p.filename) for p in parts]
        unsupported = [n for n in names if file_type_for(n) is None]
        if unsupported:
            raise HTTPException(
                415,
                f"Unsupported file type: {', '.join(unsupported[:10])}"
                f"{' and others' if len(unsupported) > 10 else ''}. "
                f"Supported: {', '.join(SUPPORTED_EXTENSIONS)}.",
            )
        for name, part in zip(names, parts, strict=True):
            if part.size is not None and part.size > settings.max_upload_bytes:
                raise HTTPException(
                    413, f"{name} is {_mb(part.size)}, over the limit of {_mb(settings.max_upload_bytes)}."
                )

        files: list[store.IncomingFile] = []
        total = 0
        for name, part in zip(names, parts, strict=True):
            content = await _read_limited(part, name, settings.max_upload_bytes)
            total += len(content)
            if total > settings.max_upload_request_bytes:  # no Content-Length (chunked body)
                raise HTTPException(
                    413,
                    f"The upload is over the limit of {_mb(settings.max_upload_request_bytes)} per request.",
                )
            file_type = file_type_for(name)
            assert file_type is not None
            files.append(store.IncomingFile(name, file_type.name, file_type.content_type, content, {}))
    finally:
        await form.close()

    batch_id, tasks = await store.create_upload_batch(runtime.pool, runtime.queue, files)
    return {"batch_id": batch_id, "tasks": [t.__dict__ for t in tasks]}


async def _read_limited(part: UploadFile, name: str, limit: int) -> bytes:
    """Read the part counting bytes; stop as soon as it exceeds the limit."""
    buffer = bytearray()
    while chunk := await part.read(READ_CHUNK):
        buffer += chunk
        if len(buffer) > limit:
            raise HTTPException(413, f"{name} is over the limit of {_mb(limit)}.")
    return bytes(buffer)

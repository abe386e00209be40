"""GET /tasks/{batch_id}/status: what the chat UI polls until every file is searchable."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter

from rag_server.api.deps import RuntimeDep
from rag_server.ingestion import store

router = APIRouter(tags=["ingestion"])


@router.get("/tasks/{batch_id}/status")
async def batch_status(batch_id: UUID, runtime: RuntimeDep) -> dict[str, Any]:
    """Batch status (queued, processing, completed, completed_with_errors, failed), counts per task
    status, and per task: filename, status, total/completed chunks, attempts, error, document_id."""
    return await store.batch_status(runtime.pool, batch_id)

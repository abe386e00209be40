"""GET /tasks/{batch_id}/status: what the chat UI polls until every file is searchable."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response

from rag_server.api.deps import PoolDep, RuntimeDep, require
from rag_server.api.errors import error_responses
from rag_server.ingestion import batches
from rag_server.ingestion.models import BatchStatus
from rag_server.read_after import READ_AFTER_HEADER, lsn_text

router = APIRouter(tags=["ingestion"], dependencies=[require("reader")], responses=error_responses(401))


@router.get("/tasks/{batch_id}/status", response_model=BatchStatus, responses=error_responses(404, 503))
async def batch_status(batch_id: UUID, pool: PoolDep, runtime: RuntimeDep, response: Response) -> BatchStatus:
    """Batch status (queued, processing, completed, completed_with_errors, failed), counts per task
    status, and per task: filename, status, total/completed chunks, attempts (deliveries), failures, error,
    document_id. 404: no such batch, or removed by retention (RAG_TASK_RETENTION_DAYS after it finished)."""
    status = await batches.batch_status(pool, batch_id)
    # The workers wrote the chunks, not this caller: its next reads must still see them (read replicas).
    if status.done and (position := await runtime.remember_write()) is not None:
        response.headers[READ_AFTER_HEADER] = lsn_text(position)
    return status

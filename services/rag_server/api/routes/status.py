"""What a signed-in client needs at start: who its key is, what the server can do, how busy ingestion is."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from rag_server import __version__
from rag_server.access.exposure import AccessMode, access_mode
from rag_server.access.models import Role
from rag_server.api.deps import PoolDep, Reader, SettingsDep
from rag_server.api.errors import error_responses
from rag_server.api.routes.health import Embedding
from rag_server.infra.capabilities import Bm25Engine, capability_report
from rag_server.infra.llm import llm_configured
from rag_server.ingestion.tasks import count_unfinished_tasks

router = APIRouter(tags=["health"], responses=error_responses(401))


class KeyInfo(BaseModel):
    name: str | None = Field(description="The key's name; null when the API is open (no key exists)")
    role: Role
    all_collections: bool = Field(description="The key reaches every collection (else only some)")


class LlmInfo(BaseModel):
    configured: bool = Field(description="false: chat answers are extractive (quoted from the sources)")
    provider: str
    model: str | None


class TaskCounts(BaseModel):
    queued: int
    processing: int


class UploadLimits(BaseModel):
    """What POST /upload accepts, so a client splits its files into batches the server takes."""

    max_files_per_upload: int
    max_file_bytes: int
    max_request_bytes: int


class StatusResponse(BaseModel):
    version: str
    auth: AccessMode
    key: KeyInfo
    bm25_engine: Bm25Engine | str
    embedding: Embedding
    llm: LlmInfo
    tasks: TaskCounts = Field(
        description="Ingestion tasks not finished yet, in the collections the key reads"
    )
    upload: UploadLimits


@router.get("/status", responses=error_responses(503))
async def status(principal: Reader, pool: PoolDep, settings: SettingsDep) -> StatusResponse:
    """The calling key (name, role), the search engines, the LLM and the ingestion backlog: what the web
    app shows and uses to hide controls a role may not use."""
    report = await capability_report(pool)
    return StatusResponse(
        version=__version__,
        auth=await access_mode(pool, settings),
        key=KeyInfo(name=principal.name, role=principal.role, all_collections=principal.collections is None),
        bm25_engine=report["bm25_engine"],
        embedding=Embedding.model_validate(report["embedding"]),
        llm=LlmInfo(
            configured=llm_configured(settings),
            provider=settings.llm_provider,
            model=settings.llm_model if llm_configured(settings) else None,
        ),
        tasks=TaskCounts.model_validate(await count_unfinished_tasks(pool)),
        upload=UploadLimits(
            max_files_per_upload=settings.max_files_per_upload,
            max_file_bytes=settings.max_upload_bytes,
            max_request_bytes=settings.max_upload_request_bytes,
        ),
    )

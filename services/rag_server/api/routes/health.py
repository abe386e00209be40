from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from rag_server import __version__
from rag_server.access.exposure import AccessMode, access_mode
from rag_server.api.deps import PoolDep, SettingsDep
from rag_server.api.errors import error_responses
from rag_server.infra.capabilities import Bm25Engine, capability_report

router = APIRouter(tags=["health"])


class Extension(BaseModel):
    active: bool
    version: str | None


class PgmqExtension(Extension):
    # How pgmq was installed (the extension, or its SQL when the extension is not available).
    install: str | None


class Extensions(BaseModel):
    vector: Extension
    pgmq: PgmqExtension
    pg_search: Extension


class Embedding(BaseModel):
    model: str | None
    dim: int | None


class HealthResponse(BaseModel):
    """Liveness plus the capability report (`infra.capabilities.capability_report`)."""

    status: Literal["ok"]
    version: str
    postgres: str
    extensions: Extensions
    bm25_engine: Bm25Engine | Literal["none"]  # "none" before migration 0002
    embedding: Embedding
    queue: str | None
    auth: AccessMode = Field(
        description="open: no API key exists and the server listens on loopback only, so the API answers "
        "without a key; api_key: every endpoint but /health needs one; locked: no key exists and the "
        "server is not on loopback, so nothing answers (create a key)"
    )


@router.get("/health", responses=error_responses(503))
async def health(pool: PoolDep, settings: SettingsDep) -> HealthResponse:
    """Liveness plus what the database can do (extensions, BM25 engine, embedding model) and whether the
    API needs a key. Never needs one itself."""
    report = await capability_report(pool)
    auth = await access_mode(pool, settings)
    return HealthResponse.model_validate({"status": "ok", "version": __version__, "auth": auth, **report})

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from rag_server import __version__
from rag_server.access.exposure import AccessMode, access_mode
from rag_server.api.deps import PoolDep, RuntimeDep, SettingsDep
from rag_server.api.errors import error_responses
from rag_server.infra.capabilities import Bm25Engine, capability_report
from rag_server.infra.readiness import readiness

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


# --- probes (docs/operations.md): public like /health, for load balancers and Kubernetes ------------


class LiveResponse(BaseModel):
    status: Literal["live"]


@router.get("/health/live")
async def live() -> LiveResponse:
    """Liveness: the process answers. Touches nothing else (a database outage must not get the server
    restarted: it would not help)."""
    return LiveResponse(status="live")


class ProbeCheck(BaseModel):
    ok: bool
    detail: str = Field(description="What was found, or why the check fails")


class ReadyResponse(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, ProbeCheck] = Field(description="database, migrations, embedding, queue")
    failing: list[str] = Field(description="The names of the checks that fail (empty when ready)")
    detail: str | None = Field(description="Why it is not ready, in one sentence (null when ready)")


@router.get(
    "/health/ready",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "Not ready: `failing` names the checks"}},
)
async def ready(runtime: RuntimeDep) -> ReadyResponse | JSONResponse:
    """Readiness: the database answers, its schema is at this code's migration head, the embedding
    model is loaded and the ingestion queue exists. 503 names the failing checks and why."""
    checks = await readiness(runtime)
    failing = [name for name, check in checks.items() if not check.ok]
    body = ReadyResponse(
        status="not_ready" if failing else "ready",
        checks={name: ProbeCheck(ok=c.ok, detail=c.detail) for name, c in checks.items()},
        failing=failing,
        detail="; ".join(f"{name}: {checks[name].detail}" for name in failing) or None,
    )
    if failing:
        return JSONResponse(body.model_dump(), status_code=503)
    return body

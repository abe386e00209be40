from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from rag_server import __version__
from rag_server.api.deps import RuntimeDep
from rag_server.infra.capabilities import capability_report

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(runtime: RuntimeDep) -> dict[str, Any]:
    """Liveness plus what the database can do (extensions, BM25 engine, embedding model)."""
    report = await capability_report(runtime.pool)
    return {"status": "ok", "version": __version__, **report}

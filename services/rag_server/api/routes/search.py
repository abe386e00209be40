from __future__ import annotations

from fastapi import APIRouter

from rag_server.api.deps import ReadPoolDep, RuntimeDep, require
from rag_server.api.errors import error_responses
from rag_server.retrieval.models import SearchRequest, SearchResponse
from rag_server.retrieval.service import search as run_search

router = APIRouter(tags=["search"], dependencies=[require("reader")], responses=error_responses(401))


@router.post("/search", responses=error_responses(400, 404, 503))
async def search(request: SearchRequest, runtime: RuntimeDep, pool: ReadPoolDep) -> SearchResponse:
    """Vector, BM25 or hybrid search over the chunks; bad parameters are a 422 from validation."""
    return await run_search(runtime, request, pool=pool)

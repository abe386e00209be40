"""Collections: create, list, read, rename/describe, delete (`force` takes its documents with it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from rag_server.api.deps import OffsetQuery, PoolDep, QueueDep, ReadPoolDep, require
from rag_server.api.errors import error_responses
from rag_server.collections import store
from rag_server.collections.models import Collection, CollectionList, CreateCollection, UpdateCollection

router = APIRouter(tags=["collections"], dependencies=[require("reader")], responses=error_responses(401))

IdOrName = Annotated[str, Path(min_length=1, max_length=100, description="The collection's id or name")]


@router.post(
    "/collections",
    status_code=201,
    response_model=Collection,
    dependencies=[require("admin")],
    responses=error_responses(400, 403, 409, 503),
)
async def create_collection(body: CreateCollection, pool: PoolDep) -> Collection:
    """A new, empty collection; the name is a slug (an invalid one is a 422, a taken one a 409)."""
    return await store.create_collection(pool, body)


@router.get("/collections", response_model=CollectionList, responses=error_responses(503))
async def list_collections(
    pool: ReadPoolDep, limit: Annotated[int, Query(ge=1, le=500)] = 100, offset: OffsetQuery = 0
) -> CollectionList:
    return await store.list_collections(pool, limit=limit, offset=offset)


@router.get("/collections/{id_or_name}", response_model=Collection, responses=error_responses(404, 503))
async def get_collection(id_or_name: IdOrName, pool: ReadPoolDep) -> Collection:
    return await store.get_collection(pool, id_or_name)


@router.patch(
    "/collections/{id_or_name}",
    response_model=Collection,
    dependencies=[require("admin")],
    responses=error_responses(400, 403, 404, 409, 503),
)
async def update_collection(id_or_name: IdOrName, body: UpdateCollection, pool: PoolDep) -> Collection:
    """Change the description, rename (same name rule; `default` keeps its name), and/or set the
    collection's `hybrid_alpha` (null clears it: the server's RAG_HYBRID_ALPHA applies again)."""
    return await store.update_collection(pool, id_or_name, body)


@router.delete(
    "/collections/{id_or_name}",
    status_code=204,
    dependencies=[require("admin")],
    responses=error_responses(403, 404, 409, 503),
)
async def delete_collection(
    id_or_name: IdOrName, pool: PoolDep, queue: QueueDep, force: bool = False
) -> Response:
    """Refused (409) while it holds documents unless `force=true`, which deletes them, their chunks and
    unfinished tasks with it, in one transaction. `default` cannot be deleted."""
    await store.delete_collection(pool, queue, id_or_name, force=force)
    return Response(status_code=204)

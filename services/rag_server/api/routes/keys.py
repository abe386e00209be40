"""API keys (admin keys only): create (the key is in the response, once), list, change access, revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from rag_server.access import keys
from rag_server.access.models import KEY_NAME_PATTERN, ApiKey, CreatedKey, CreateKey, KeyList, UpdateKey
from rag_server.api.deps import OffsetQuery, PoolDep, require
from rag_server.api.errors import EITHER_422, error_responses

router = APIRouter(tags=["keys"], dependencies=[require("admin")], responses=error_responses(401, 403))


@router.post(
    "/keys", status_code=201, response_model=CreatedKey, responses=error_responses(400, 404, 409, 503)
)
async def create_key(body: CreateKey, pool: PoolDep) -> CreatedKey:
    """A new key; `key` in the response is the only time it is shown (only its hash is stored). An
    unknown collection is a 404; an admin key with collections a 422 (admins reach every collection)."""
    return await keys.create_key(pool, body)


@router.get("/keys", response_model=KeyList, responses=error_responses(503))
async def list_keys(
    pool: PoolDep,
    include_revoked: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: OffsetQuery = 0,
) -> KeyList:
    """The keys by name, a page at a time (`limit` from `offset`; `total`: all of them); revoked ones
    too with `include_revoked`. Never the keys themselves: their first characters (`key_prefix`)."""
    return await keys.list_keys(pool, include_revoked=include_revoked, limit=limit, offset=offset)


@router.patch(
    "/keys/{name}", response_model=ApiKey, responses={**error_responses(400, 404, 409, 503), **EITHER_422}
)
async def update_key(
    name: Annotated[str, Path(pattern=KEY_NAME_PATTERN, max_length=100)], body: UpdateKey, pool: PoolDep
) -> ApiKey:
    """Change the active key's `role`, its `collections` (names or ids: the new set replaces the old;
    null: every collection, new ones too), or both; the key itself stays the same, and its next request
    has the new access. An admin key reaches every collection: collections with `role: admin` (or for an
    admin key) are a 422, a key made admin loses its list, and one leaving admin needs `collections`, a
    list or null (else 422). Unknown collection: 404 `collection_not_found`; no active key of that name:
    404; demoting the last active admin key: 409."""
    return await keys.update_key(pool, name, body)


@router.delete("/keys/{name}", response_model=ApiKey, responses=error_responses(404, 503))
async def revoke_key(
    name: Annotated[str, Path(pattern=KEY_NAME_PATTERN, max_length=100)], pool: PoolDep
) -> ApiKey:
    """Revoke the active key of this name: it stops working at once."""
    return await keys.revoke_key(pool, name)

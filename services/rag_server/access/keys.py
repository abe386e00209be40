"""All API key SQL: create (the key is returned once, its sha256 stored), list, change a key's access,
revoke, authenticate.

Keys are 256 random bits, so a plain sha256 is the right hash (a slow password hash buys nothing
against a guess space of 2^256 and would cost every request). Reading and writing `api_keys` needs an
admin scope (row-level security); authentication goes through `rag_authenticate`, a SECURITY DEFINER
function, because it runs before anyone is known.
"""

from __future__ import annotations

import hashlib
import secrets
from uuid import UUID

import asyncpg

from rag_server.access.models import (
    KEY_PREFIX,
    OPEN,
    ApiKey,
    CreatedKey,
    CreateKey,
    KeyList,
    Principal,
    UpdateKey,
)
from rag_server.collections.locks import share_collection
from rag_server.collections.store import resolve_ids
from rag_server.errors import (
    CollectionNotFoundError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    UnauthenticatedError,
)
from rag_server.infra.database import Executor, connection, transaction

BOOTSTRAP_KEY_NAME = "bootstrap-admin"
HOW_TO_CREATE = "create one with `rag-server keys create --name NAME --role admin`"

_COLUMNS = """k.id, k.name, k.role, k.key_prefix, k.created_at, k.last_used_at, k.revoked_at,
    CASE WHEN k.all_collections THEN NULL ELSE coalesce(
        (SELECT array_agg(c.name ORDER BY c.name) FROM api_key_collections kc
         JOIN collections c ON c.id = kc.collection_id WHERE kc.key_id = k.id), '{}') END AS collections"""


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


async def create_key(conn: Executor, body: CreateKey, *, key: str | None = None) -> CreatedKey:
    """A new key (`key`: a given one, e.g. the bootstrap key; else a random one)."""
    key = key or new_key()
    async with transaction(conn) as c:
        collection_ids = None if body.collections is None else await resolve_ids(c, body.collections)
        try:
            key_id = await c.fetchval(
                """
                INSERT INTO api_keys (name, role, all_collections, key_hash, key_prefix)
                VALUES ($1, $2, $3, $4, $5) RETURNING id
                """,
                body.name,
                body.role,
                collection_ids is None,
                hash_key(key),
                key[:12],
            )
        except asyncpg.UniqueViolationError:
            raise ConflictError(f"an active key named {body.name!r} already exists") from None
        await c.execute(
            "INSERT INTO api_key_collections (key_id, collection_id) SELECT $1, unnest($2::uuid[])",
            key_id,
            collection_ids or [],
        )
        created = await _get(c, "k.id = $1", key_id)
    return CreatedKey(**created.model_dump(), key=key)


async def list_keys(
    conn: Executor, *, include_revoked: bool = False, limit: int | None = None, offset: int = 0
) -> KeyList:
    """The keys by name (active ones only, unless `include_revoked`): `limit` of them from `offset`
    (None: every one); `total` counts them all."""
    async with connection(conn) as c:
        total = await c.fetchval(
            "SELECT count(*) FROM api_keys k WHERE $1 OR k.revoked_at IS NULL", include_revoked
        )
        rows = await c.fetch(
            f"""SELECT {_COLUMNS} FROM api_keys k WHERE $1 OR k.revoked_at IS NULL
                ORDER BY k.name, k.created_at, k.id LIMIT $2 OFFSET $3""",
            include_revoked,
            limit,
            offset,
        )
    items = [ApiKey.model_validate(dict(r)) for r in rows]
    return KeyList(items=items, total=int(total), limit=limit, offset=offset)


async def update_key(conn: Executor, name: str, body: UpdateKey) -> ApiKey:
    """Change the active key's role, its collections (the new set replaces the old), or both, in one
    transaction. The key keeps its secret; authentication reads the key on every request, so its next
    request has the new access. NotFoundError: no active key of that name, or an unknown collection;
    InvalidInputError: collections for an admin key, or none for a key leaving admin; ConflictError:
    demoting the last active admin key (nobody could manage keys through the API any more)."""
    async with transaction(conn) as c:
        # The key's row, and on a demotion every active admin's, locked in id order: two admins demoting
        # each other at once would otherwise both see the other one left, and leave none. NO KEY UPDATE:
        # the key's own requests go on meanwhile (a new chat session references the row: KEY SHARE).
        demoting = body.role is not None and body.role != "admin"
        rows = await c.fetch(
            """SELECT id, name, role, all_collections FROM api_keys
               WHERE revoked_at IS NULL AND (name = $1 OR ($2 AND role = 'admin'))
               ORDER BY id FOR NO KEY UPDATE""",
            name,
            demoting,
        )
        key = next((r for r in rows if r["name"] == name), None)
        if key is None:
            raise NotFoundError(f"no active key named {name!r}")
        role = body.role or key["role"]
        if role == "admin":
            if body.collections is not None:
                raise InvalidInputError(
                    f"{name!r} is an admin key, which reaches every collection: give no collections, or a "
                    "role (editor or reader) with them",
                    "collections",
                )
            collection_ids = None
        elif body.every_collection:
            collection_ids = None
        elif body.collections is None:
            if key["role"] == "admin":
                raise InvalidInputError(
                    f"{name!r} is an admin key, which reaches every collection: a {role} key needs "
                    "`collections` too (the ones it may reach)",
                    "collections",
                )
            collection_ids = None if key["all_collections"] else await _collections_of(c, key["id"])
        else:
            collection_ids = await _held_collections(c, body.collections)
        if key["role"] == "admin" and role != "admin" and sum(r["role"] == "admin" for r in rows) == 1:
            raise ConflictError(
                f"{name!r} is the last active admin key: demoting it would leave nobody to manage keys "
                "and collections; make another admin key first"
            )
        await c.execute(
            "UPDATE api_keys SET role = $2, all_collections = $3 WHERE id = $1",
            key["id"],
            role,
            collection_ids is None,
        )
        await c.execute(
            """DELETE FROM api_key_collections WHERE key_id = $1
               AND NOT (collection_id = ANY ($2::uuid[]))""",
            key["id"],
            collection_ids or [],
        )
        await c.execute(
            """INSERT INTO api_key_collections (key_id, collection_id) SELECT $1, unnest($2::uuid[])
               ON CONFLICT DO NOTHING""",
            key["id"],
            collection_ids or [],
        )
        return await _get(c, "k.id = $1", key["id"])


async def _collections_of(conn: Executor, key_id: UUID) -> list[UUID]:
    rows = await conn.fetch("SELECT collection_id FROM api_key_collections WHERE key_id = $1", key_id)
    return [r["collection_id"] for r in rows]


async def _held_collections(conn: Executor, refs: list[str]) -> list[UUID]:
    """The collections named, each row held (FOR KEY SHARE, in id order) to the end of the transaction,
    as a write into a collection holds it: a concurrent delete of one waits, or is seen (a 404)."""
    ids = sorted(await resolve_ids(conn, refs))
    for collection_id in ids:
        if not await share_collection(conn, collection_id):
            raise CollectionNotFoundError(f"no collection {str(collection_id)!r} (deleted meanwhile)")
    return ids


async def revoke_key(conn: Executor, name: str) -> ApiKey:
    """Revoke the active key of this name: it stops working at once; the row stays for the record."""
    key_id = await conn.fetchval(
        "UPDATE api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL RETURNING id", name
    )
    if key_id is None:
        raise NotFoundError(f"no active key named {name!r}")
    return await _get(conn, "k.id = $1", key_id)


async def _get(conn: Executor, where: str, *args: object) -> ApiKey:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM api_keys k WHERE {where}", *args)
    assert row is not None
    return ApiKey.model_validate(dict(row))


async def keys_exist(conn: Executor) -> bool:
    """Whether any key was ever made, revoked ones too: revoking the last key closes the API, it never
    reopens it (migration 0017)."""
    return bool(await conn.fetchval("SELECT rag_keys_exist()"))


def presented_key(bearer: str | None, header: str | None) -> str | None:
    """The key a request presents, as `Authorization: Bearer` or `X-API-Key`. Two different ones are
    refused (UnauthenticatedError): which of them is meant is not for the server to guess."""
    if bearer and header and bearer != header:
        raise UnauthenticatedError(
            "two different API keys (Authorization: Bearer and X-API-Key): send one of them"
        )
    return bearer or header or None


async def authenticate(conn: Executor, presented: str | None, *, open_allowed: bool) -> Principal:
    """The principal of a request. Open mode (no key was ever made, and `open_allowed`: the server listens on
    a loopback address only) answers anyone, also a client that sends some key anyway (OpenAI SDKs and
    Open WebUI always send one). Otherwise a missing, unknown or revoked key is an UnauthenticatedError.
    The key never reaches an error message or a log."""
    row = None
    if presented:
        row = await conn.fetchrow("SELECT * FROM rag_authenticate($1)", hash_key(presented))
    if row is None:
        if await keys_exist(conn):
            raise UnauthenticatedError(
                "the API key is not valid (unknown or revoked)"
                if presented
                else "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
            )
        if not open_allowed:
            raise UnauthenticatedError(
                f"no API key exists and the server is not on a loopback address: {HOW_TO_CREATE}"
            )
        return OPEN
    ids = row["collection_ids"]
    return Principal(
        key_id=row["id"], name=row["name"], role=row["role"], collections=None if ids is None else tuple(ids)
    )


async def ensure_bootstrap_key(conn: Executor, key: str) -> bool:
    """Install the configured admin key (long enough: Settings.bootstrap_key) unless a key with its hash
    exists (revoked: it stays revoked). A changed secret revokes the previous bootstrap key. Returns
    whether a key was created."""
    async with transaction(conn) as c:
        if await c.fetchval("SELECT 1 FROM api_keys WHERE key_hash = $1", hash_key(key)):
            return False
        # A new secret replaces the previous bootstrap key (rotation by changing the secret).
        await c.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL",
            BOOTSTRAP_KEY_NAME,
        )
        await create_key(c, CreateKey(name=BOOTSTRAP_KEY_NAME, role="admin"), key=key)
    return True

"""All API key SQL: create (the key is returned once, its sha256 stored), list, revoke, authenticate.

Keys are 256 random bits, so a plain sha256 is the right hash (a slow password hash buys nothing
against a guess space of 2^256 and would cost every request). Reading and writing `api_keys` needs an
admin scope (row-level security); authentication goes through `rag_authenticate`, a SECURITY DEFINER
function, because it runs before anyone is known.
"""

from __future__ import annotations

import hashlib
import secrets

import asyncpg

from rag_server.access.models import KEY_PREFIX, OPEN, ApiKey, CreatedKey, CreateKey, KeyList, Principal
from rag_server.collections.store import resolve_ids
from rag_server.errors import ConflictError, NotFoundError, UnauthenticatedError
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
